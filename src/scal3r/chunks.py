"""The chunk contract, one home for inference, training and the backend (design.md §5).

A long sequence is cut into overlapping chunks of consecutive frames (`chunk_ranges`); loop chunks
are any sorted set of frames. Inside a chunk the frames are fed to the network middle frame first
(`feed_order`): that frame is the chunk's *reference*, its camera defines the chunk's coordinate
frame (the release's rule; its `src_inds`). The network returns rows in the fed order; everything
downstream (backend, stores, users) sees rows in ascending frame order (`rows_ascending`).

Chunk outputs (`OUTPUT_KEYS`, shapes in `output_shapes`): pose_enc (n, 9), depth (n, H, W, 1),
depth_conf (n, H, W), world_points (n, H, W, 3), world_points_conf (n, H, W), plus "frames" (n,)
the global frame index of each row.

Knows nothing above it: numpy only, torch tensors accepted where rows are reordered.
"""

from __future__ import annotations

import math
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

from scal3r.errors import InputError

ChunkRange = Tuple[int, int]

OUTPUT_KEYS = ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf")


def output_shapes(n: int, height: int, width: int) -> Dict[str, tuple]:
    """Shape of every output of a chunk of `n` frames at `height` × `width`."""
    return {"pose_enc": (n, 9), "depth": (n, height, width, 1), "depth_conf": (n, height, width),
            "world_points": (n, height, width, 3), "world_points_conf": (n, height, width)}


# --- ranges ---------------------------------------------------------------------------------------

def chunk_ranges(num_frames: int, block_size: int = 60, overlap: int = 30) -> List[ChunkRange]:
    """Half-open frame ranges [start, end) of the release's chunking.

    Chunk i starts at i·(block_size − overlap) and holds up to `block_size` frames; there are
    ceil((N − overlap) / (block_size − overlap)) chunks, so the last one ends at N. A sequence of at
    most `block_size` frames is one chunk. (K·stride + overlap frames give exactly K full chunks.)
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


def frames_for_chunks(n_chunks: int, block_size: int, overlap: int) -> int:
    """Frames that `n_chunks` full consecutive chunks span."""
    return (n_chunks - 1) * (block_size - overlap) + block_size


def validate_ranges(ranges: Sequence[ChunkRange], num_frames: int) -> List[ChunkRange]:
    """Check that ranges are non-empty, inside [0, num_frames), and cover every frame."""
    out = []
    covered = np.zeros(num_frames, dtype=bool)
    for r in ranges:
        start, end = int(r[0]), int(r[1])
        if not 0 <= start < end <= num_frames:
            raise InputError(f"chunk range ({start}, {end}) is empty or outside the {num_frames} frames")
        out.append((start, end))
        covered[start:end] = True
    if not out:
        raise InputError("no chunk ranges given")
    missing = np.flatnonzero(~covered)
    if missing.size:
        raise InputError(f"{missing.size} frames are in no chunk (first: {missing[0]})")
    return out


# --- the reference frame and the feed order ------------------------------------------------------

def reference_row(n_frames: int) -> int:
    """Row (in ascending frame order) of the chunk's reference frame: ceil(n/2) − 1.

    The release feeds a chunk's middle frame to the network first, so the chunk's coordinate
    frame is that camera's frame; pose errors of the network grow away from it.
    """
    if n_frames < 1:
        raise InputError(f"a chunk needs at least one frame, got {n_frames}")
    return int(math.ceil(n_frames / 2)) - 1


def network_order(n_frames: int) -> np.ndarray:
    """(n,) ascending-row index of each network input slot: [middle, 0 … middle−1, middle+1 … n−1].

    `rows_ascending[network_order(n)]` gives rows in the order fed to the network (the release's
    `src_inds` relative to the chunk start); `ascending_order(n)` inverts it.
    """
    middle = reference_row(n_frames)
    return np.array([middle] + [i for i in range(n_frames) if i != middle], dtype=np.int64)


def ascending_order(n_frames: int) -> np.ndarray:
    """(n,) network slot of each ascending row: `outputs_in_network_order[ascending_order(n)]`."""
    return np.argsort(network_order(n_frames), kind="stable")


def feed_order(frames: Sequence[int]) -> List[int]:
    """A chunk's frames (any set, e.g. a loop chunk) in the order fed to the network."""
    ascending = sorted(int(f) for f in frames)
    return [ascending[int(i)] for i in network_order(len(ascending))]


def reference_first_order(start: int, end: int) -> List[int]:
    """`feed_order` of the range [start, end)."""
    return feed_order(range(start, end))


def rows_ascending(out: Mapping) -> Dict:
    """A chunk's outputs with rows sorted by their "frames" entry (numpy arrays or torch tensors)."""
    frames = out["frames"]
    order = np.argsort(np.asarray(frames.tolist() if hasattr(frames, "tolist") else frames), kind="stable")
    if hasattr(frames, "detach"):  # torch: index with a tensor, keep the type
        import torch

        order = torch.as_tensor(order)
    return {k: v[order] for k, v in out.items()}
