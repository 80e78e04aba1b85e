"""Cutting a sequence into overlapping chunks, and the order frames are fed within a chunk."""

from __future__ import annotations

from typing import List, Sequence, Tuple

from scal3r.errors import InputError
from scal3r.geometry.camera import network_order

ChunkRange = Tuple[int, int]


def chunk_ranges(num_frames: int, block_size: int = 60, overlap: int = 30) -> List[ChunkRange]:
    """Half-open frame ranges [start, end) of the release's chunking.

    Chunk i starts at i·(block_size − overlap) and holds up to `block_size` frames; there are
    ceil((N − overlap) / (block_size − overlap)) chunks, so the last one ends at N. A sequence of at
    most `block_size` frames is one chunk.
    """
    if num_frames < 1:
        raise InputError("no frames to cut into chunks")
    if block_size < 2:
        raise InputError(f"block size must be at least 2, got {block_size}")
    if not 0 <= overlap < block_size:
        raise InputError(f"overlap must be in [0, block size), got overlap {overlap} with block size {block_size}")
    stride = block_size - overlap
    count = (num_frames - overlap + stride - 1) // stride
    if count <= 0 or num_frames <= block_size:
        return [(0, num_frames)]
    return [(i * stride, min(i * stride + block_size, num_frames)) for i in range(count)]


def validate_ranges(ranges: Sequence[ChunkRange], num_frames: int) -> List[ChunkRange]:
    """Check that ranges are non-empty, inside [0, num_frames), and cover every frame."""
    out = []
    covered = [False] * num_frames
    for r in ranges:
        start, end = int(r[0]), int(r[1])
        if not 0 <= start < end <= num_frames:
            raise InputError(f"chunk range ({start}, {end}) is empty or outside the {num_frames} frames")
        out.append((start, end))
        for i in range(start, end):
            covered[i] = True
    if not out:
        raise InputError("no chunk ranges given")
    missing = [i for i, c in enumerate(covered) if not c]
    if missing:
        raise InputError(f"{len(missing)} frames are in no chunk (first: {missing[0]})")
    return out


def reference_first_order(start: int, end: int) -> List[int]:
    """Frame indices of a chunk in the order fed to the network: its middle frame first.

    The first frame fed is the chunk's reference frame (its pose defines the chunk's coordinate
    frame). The rule (`scal3r.geometry.camera.network_order`, the release's) is kept in one place
    because the backend must know which frame that was.
    """
    return [start + int(i) for i in network_order(end - start)]
