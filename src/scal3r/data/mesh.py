"""Indexed triangle meshes for the synthetic worlds, grouped in spatial tiles so the renderer can cull them.

Every vertex carries position (3), normal (3), texture coordinates (2), texture-array layer (1) and
an RGB tint (3): 12 float32s (`VERTEX_FLOATS`). Triangles are indexed: the software rasteriser's
vertex stage is the bottleneck, and indexing lets it shade a quad's 4 corners once instead of 6
times (a tree crown's 42 vertices instead of 240). Objects are assigned to a square tile of the
ground plane by the centre of their bounding box; objects much wider than a tile go to one "global"
tile that is always drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

VERTEX_FLOATS = 12
_GLOBAL = (1 << 30, 1 << 30)


@dataclass
class Mesh:
    """vertices: (V, 12) float32; indices: (3T,) uint32, sorted by tile; tiles: one (first index,
    index count, bbox min (3,), bbox max (3,)) per tile; the first entry is the always-drawn global
    tile when `global_tile`."""

    vertices: np.ndarray
    indices: np.ndarray
    tiles: List[Tuple[int, int, np.ndarray, np.ndarray]]
    global_tile: bool

    @property
    def triangle_count(self) -> int:
        return self.indices.shape[0] // 3


class MeshBuilder:
    """Collects objects as triangle lists; `build()` packs them by tile."""

    def __init__(self, tile_size: float):
        self.tile_size = float(tile_size)
        self._parts: Dict[Tuple[int, int], List[Tuple[np.ndarray, np.ndarray]]] = {}

    def add_triangles(self, positions: np.ndarray, normals: np.ndarray, uv: np.ndarray, layer: int,
                      tint: Sequence[float] = (1.0, 1.0, 1.0), tile: Optional[Tuple[int, int]] = None,
                      indices: Optional[np.ndarray] = None) -> None:
        """positions, normals (V, 3); uv (V, 2); indices (3T,) into them (default: consecutive
        triples); one layer and tint for the whole object."""
        n = positions.shape[0]
        block = np.empty((n, VERTEX_FLOATS), np.float32)
        block[:, 0:3] = positions
        block[:, 3:6] = normals
        block[:, 6:8] = uv
        block[:, 8] = layer
        block[:, 9:12] = tint
        if tile is None:
            tile = self.tile_of(positions)
        if indices is None:
            indices = np.arange(n, dtype=np.uint32)
        self._parts.setdefault(tile, []).append((block, np.asarray(indices, dtype=np.uint32)))

    def tile_of(self, positions: np.ndarray) -> Tuple[int, int]:
        lo, hi = positions[:, :2].min(0), positions[:, :2].max(0)
        # A tile's culling box grows to hold what it is given, so only very wide objects go global.
        if np.any(hi - lo > 3 * self.tile_size):
            return _GLOBAL
        c = (lo + hi) / 2 // self.tile_size
        return int(c[0]), int(c[1])

    def quads(self, corners: np.ndarray, uv: np.ndarray, layer: int, tint=(1.0, 1.0, 1.0),
              tile: Optional[Tuple[int, int]] = None) -> None:
        """corners (Q, 4, 3) in order around each quad; uv (Q, 4, 2). Flat normal per quad."""
        corners = np.asarray(corners, dtype=np.float64).reshape(-1, 4, 3)
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 4, 2)
        a, b = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
        # np.cross is slow on small arrays, and the builders call this tens of thousands of times.
        normal = np.stack([a[:, 1] * b[:, 2] - a[:, 2] * b[:, 1], a[:, 2] * b[:, 0] - a[:, 0] * b[:, 2],
                           a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]], axis=1)
        normal /= np.maximum(np.sqrt((normal ** 2).sum(1, keepdims=True)), 1e-12)
        q = corners.shape[0]
        idx = (np.arange(q, dtype=np.uint32)[:, None] * 4 + np.array([0, 1, 2, 0, 2, 3], dtype=np.uint32)).reshape(-1)
        self.add_triangles(corners.reshape(-1, 3), np.repeat(normal, 4, axis=0), uv.reshape(-1, 2), layer, tint,
                           tile, idx)

    def ground(self, x0: float, y0: float, x1: float, y1: float, z: float, layer: int, uv_scale: Tuple[float, float],
               tint=(1.0, 1.0, 1.0), uv_origin: Tuple[float, float] = (0.0, 0.0), tile=None) -> None:
        """Horizontal rectangle facing up; uv = (world − uv_origin) / uv_scale."""
        c = np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]])
        uv = (c[:, :2] - uv_origin) / np.asarray(uv_scale)
        self.quads(c[None], uv[None], layer, tint, tile)

    def wall(self, p0: Sequence[float], p1: Sequence[float], z0: float, z1: float, layer: int,
             tile_m: Tuple[float, float], tint=(1.0, 1.0, 1.0), u0: float = 0.0, v0: float = 0.0, tile=None) -> None:
        """Vertical quad from p0 to p1 (xy) between heights z0 and z1, facing to the right of p0→p1.
        u runs along the wall in units of tile_m[0] from u0, v up from z0 in units of tile_m[1] from v0."""
        p0, p1 = np.asarray(p0, dtype=np.float64), np.asarray(p1, dtype=np.float64)
        length = float(np.linalg.norm(p1 - p0))
        # Counter-clockwise seen from the right-hand side, so the normal points there; seen from
        # there p0 is on the left, so u grows left to right and the texture is not mirrored.
        c = np.array([[p0[0], p0[1], z0], [p1[0], p1[1], z0], [p1[0], p1[1], z1], [p0[0], p0[1], z1]])
        u1 = u0 + length / tile_m[0]
        v1 = v0 + (z1 - z0) / tile_m[1]
        uv = np.array([[u0, v0], [u1, v0], [u1, v1], [u0, v1]])
        self.quads(c[None], uv[None], layer, tint, tile)

    def box(self, x0: float, y0: float, x1: float, y1: float, z0: float, z1: float, side_layer: int,
            top_layer: int, side_tile_m: Tuple[float, float] = (1.0, 1.0), top_tile_m: Tuple[float, float] = (1.0, 1.0),
            tint=(1.0, 1.0, 1.0), bottom: bool = False, tile=None) -> None:
        """Axis-aligned box: four walls (as `wall`, u running on around the box) and a top (and a
        bottom in the side material on request, for boxes seen from below). Built in one call: cars
        and benches are made of many small boxes."""
        # Walking the footprint counter-clockwise (seen from above), the outside is on the right.
        foot = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]])
        edge = np.hypot(*(foot[1:] - foot[:-1]).T) / side_tile_m[0]
        u = np.concatenate([[0.0], np.cumsum(edge)])
        v1 = (z1 - z0) / side_tile_m[1]
        walls = np.zeros((4, 4, 3))
        walls[:, 0, :2], walls[:, 1, :2] = foot[:-1], foot[1:]
        walls[:, 2, :2], walls[:, 3, :2] = foot[1:], foot[:-1]
        walls[:, :2, 2], walls[:, 2:, 2] = z0, z1
        wall_uv = np.stack([np.stack([u[:-1], np.zeros(4)], 1), np.stack([u[1:], np.zeros(4)], 1),
                            np.stack([u[1:], np.full(4, v1)], 1), np.stack([u[:-1], np.full(4, v1)], 1)], 1)
        tops = np.array([[[x0, y0, z1], [x1, y0, z1], [x1, y1, z1], [x0, y1, z1]]])
        top_uv = tops[..., :2] / np.asarray(top_tile_m)
        if bottom:  # an underside (ceilings, lamp heads) in the side material
            under = np.array([[[x0, y0, z0], [x0, y1, z0], [x1, y1, z0], [x1, y0, z0]]])
            walls = np.concatenate([walls, under])
            wall_uv = np.concatenate([wall_uv, under[..., :2] / np.asarray(side_tile_m)])
        if side_layer == top_layer:
            self.quads(np.concatenate([walls, tops]), np.concatenate([wall_uv, top_uv]), side_layer, tint, tile)
        else:
            self.quads(walls, wall_uv, side_layer, tint, tile)
            self.quads(tops, top_uv, top_layer, tint, tile)

    def prism(self, cx: float, cy: float, radius: float, z0: float, z1: float, sides: int, layer: int,
              tile_m: Tuple[float, float] = (1.0, 1.0), tint=(1.0, 1.0, 1.0), top_layer: Optional[int] = None,
              tile=None) -> None:
        """Vertical n-sided prism (a cylinder stand-in) with an optional top."""
        ang = 2 * np.pi * np.arange(sides + 1) / sides
        ring = np.stack([cx + radius * np.cos(ang), cy + radius * np.sin(ang)], axis=1)
        seg = 2 * radius * math.sin(math.pi / sides) / tile_m[0]
        quads, uvs = [], []
        for i in range(sides):
            a, b = ring[i], ring[i + 1]
            quads.append([[a[0], a[1], z0], [b[0], b[1], z0], [b[0], b[1], z1], [a[0], a[1], z1]])
            uvs.append([[i * seg, 0], [(i + 1) * seg, 0], [(i + 1) * seg, (z1 - z0) / tile_m[1]], [i * seg, (z1 - z0) / tile_m[1]]])
        self.quads(np.array(quads), np.array(uvs), layer, tint, tile)
        if top_layer is not None:
            pos = np.concatenate([[[cx, cy, z1]], np.concatenate([ring[:sides], np.full((sides, 1), z1)], 1)])
            k = np.arange(sides, dtype=np.uint32)
            idx = np.stack([np.zeros(sides, np.uint32), 1 + k, 1 + (k + 1) % sides], 1).reshape(-1)
            self.add_triangles(pos, np.tile([0.0, 0.0, 1.0], (pos.shape[0], 1)), pos[:, :2] / tile_m[0], top_layer,
                               tint, tile, idx)

    def blob(self, cx: float, cy: float, cz: float, radii: Tuple[float, float, float], rng: np.random.Generator,
             layer: int, tint=(1.0, 1.0, 1.0), roughness: float = 0.18, uv_m: float = 2.0, tile=None) -> None:
        """A lumpy ellipsoid (a tree crown): an icosahedron subdivided once, vertices pushed in/out,
        smooth normals (those of the ellipsoid)."""
        unit, faces = _ICOSPHERE
        radii = np.asarray(radii, dtype=np.float64)
        pos = unit * (1 + roughness * (rng.random(len(unit))[:, None] - 0.5) * 2) * radii + np.array([cx, cy, cz])
        normal = unit / radii
        normal /= np.linalg.norm(normal, axis=1, keepdims=True)
        uv = np.stack([(pos[:, 0] + pos[:, 1]) / uv_m, pos[:, 2] / uv_m], axis=1)
        self.add_triangles(pos, normal, uv, layer, tint, tile, faces.reshape(-1))

    def build(self) -> Mesh:
        keys = sorted(self._parts, key=lambda k: (k != _GLOBAL, k))
        vert_blocks, index_blocks, tiles = [], [], []
        n_vert = n_index = 0
        for key in keys:
            tile_first, tile_verts = n_index, []
            for block, idx in self._parts[key]:
                vert_blocks.append(block)
                index_blocks.append(idx + n_vert)
                tile_verts.append(block[:, :3])
                n_vert += block.shape[0]
                n_index += idx.shape[0]
            pts = np.concatenate(tile_verts)
            tiles.append((tile_first, n_index - tile_first, pts.min(0).astype(np.float64), pts.max(0).astype(np.float64)))
        vertices = np.concatenate(vert_blocks) if vert_blocks else np.zeros((0, VERTEX_FLOATS), np.float32)
        indices = np.concatenate(index_blocks).astype(np.uint32) if index_blocks else np.zeros(0, np.uint32)
        return Mesh(vertices=vertices, indices=indices, tiles=tiles, global_tile=bool(keys) and keys[0] == _GLOBAL)


def _icosphere() -> Tuple[np.ndarray, np.ndarray]:
    """Unit icosphere with one subdivision: 42 vertices, 80 outward-wound faces."""
    t = (1 + 5 ** 0.5) / 2
    v = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t), (0, -1, -t), (0, 1, -t),
         (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]
    f = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2), (10, 7, 6),
         (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5), (2, 4, 11), (6, 2, 10), (8, 6, 7),
         (9, 8, 1)]
    verts = [np.array(p, dtype=np.float64) / np.linalg.norm(p) for p in v]
    cache: Dict[Tuple[int, int], int] = {}

    def mid(a: int, b: int) -> int:
        key = (min(a, b), max(a, b))
        if key not in cache:
            m = verts[a] + verts[b]
            verts.append(m / np.linalg.norm(m))
            cache[key] = len(verts) - 1
        return cache[key]

    faces = []
    for a, b, c in f:
        ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
        faces += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
    return np.array(verts), np.array(faces, dtype=np.uint32)


_ICOSPHERE = _icosphere()
