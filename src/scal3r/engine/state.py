"""Where chunk state lives between layers.

The layer-synchronous loop touches every chunk once per layer, so each chunk's tokens (and the head
features collected so far) must be kept somewhere in between. `MemoryStore` keeps them as they are
(on the model's device).
"""

from __future__ import annotations

from typing import Dict, Tuple

from torch import Tensor


class MemoryStore:
    """Chunk state kept in RAM (or device memory): {(chunk, name): tensor}."""

    def __init__(self) -> None:
        self._data: Dict[Tuple[int, str], Tensor] = {}

    def put(self, chunk: int, name: str, value: Tensor) -> None:
        self._data[(chunk, name)] = value

    def get(self, chunk: int, name: str) -> Tensor:
        return self._data[(chunk, name)]

    def has(self, chunk: int, name: str) -> bool:
        return (chunk, name) in self._data

    def pop(self, chunk: int, name: str) -> Tensor:
        return self._data.pop((chunk, name))

    def names(self, chunk: int):
        return [n for (c, n) in self._data if c == chunk]

    def clear(self) -> None:
        self._data.clear()
