"""Geometric backend: cameras, Sim(3), chunk alignment, loops, pose graph, fusion.

It serves any feed-forward model's chunk outputs and never imports `scal3r.model` or
`scal3r.engine`. Entry point: `assemble(chunk_outputs, chunk_ranges, loops=None)`.
"""

from scal3r.geometry.backend import BackendConfig, Reconstruction, assemble, frame_owners
from scal3r.geometry.fuse import FusionConfig, PointCloud, fuse_frames, fuse_reconstruction
from scal3r.geometry.loops import (LoopCandidate, LoopConfig, LoopReport, find_loop_candidates, loop_chunk_frames,
                                   thumbnail_descriptors)

__all__ = [
    "BackendConfig", "Reconstruction", "assemble", "frame_owners",
    "FusionConfig", "PointCloud", "fuse_frames", "fuse_reconstruction",
    "LoopCandidate", "LoopConfig", "LoopReport", "find_loop_candidates", "loop_chunk_frames", "thumbnail_descriptors",
]
