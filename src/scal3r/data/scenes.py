"""Procedural worlds around a camera path: a city street grid and a pedestrian courtyard.

Internal world frame: z up, x east, y north, metres; the ground is z = 0. Builders take the path
(or route) first and place everything so that nothing stands where the camera goes.

City: intersections on a square grid of spacing S; each street is 12 m of asphalt with lane
markings, 15 cm kerbs, 4 m pavements with trees and street lights, parked cars in the kerb lane,
and blocks lined with buildings (textured facades in multiples of a 3.2 m window bay, some with
shops on a 4.5 m ground storey) or, now and then, a park. Walk: a cobbled courtyard bounded by
buildings, with an arcade, trees in planters, benches, lamps, a fountain and small pavilions (rooms
with a doorway), all kept at least a body width away from the path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Tuple

import numpy as np
from scipy.spatial import cKDTree

from scal3r.data.mesh import Mesh, MeshBuilder
from scal3r.data.textures import (FACADE_TILE_M, ROAD_TILE_ALONG_M, STOREFRONT_TILE_M, Layer, facade_layer,
                                  storefront_layer)
from scal3r.data.trajectories import CityRoute, PlanarPath

BAY = 3.2      # facade window bay and storey height (m)
SHOP = 4.5     # ground storey with shops (m)


@dataclass(frozen=True)
class CityParams:
    """Street-grid dimensions (metres) and densities."""

    road_half_width: float = 6.0
    sidewalk: float = 4.0
    kerb: float = 0.15
    margin_blocks: int = 3          # blocks built beyond the route on every side
    park_probability: float = 0.1
    shop_probability: float = 0.55
    gap_probability: float = 0.12
    tree_street_probability: float = 0.6
    car_probability: float = 0.55
    tile_size: float = 50.0


@dataclass(frozen=True)
class WalkParams:
    """Courtyard dimensions (metres) and densities."""

    margin: float = 7.0             # free ground between the path's bounding box and the buildings
    clearance: float = 1.0          # minimum gap between an object and the path
    object_density: float = 1 / 45  # objects per square metre of courtyard
    tile_size: float = 20.0


def _tint(rng: np.random.Generator, spread: float = 0.12) -> Tuple[float, float, float]:
    base = 1 + spread * (rng.random() - 0.5) * 2
    return tuple(float(base * (1 + 0.4 * spread * (rng.random() - 0.5))) for _ in range(3))


# --- shared objects ------------------------------------------------------------------------------

def add_building(b: MeshBuilder, x0: float, y0: float, x1: float, y1: float, front: int, storeys: int,
                 shop: bool, rng: np.random.Generator, z0: float = 0.0) -> None:
    """A block-shaped building on footprint [x0, x1] × [y0, y1] standing on z0. front: which wall
    faces the street (0 south, 1 east, 2 north, 3 west) and gets the shop front."""
    tint = _tint(rng)
    facade = facade_layer(int(rng.integers(0, 64)))
    shop_layer = storefront_layer(int(rng.integers(0, 64)))
    base_h = SHOP if shop else 0.0
    top = z0 + base_h + storeys * BAY
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]  # counter-clockwise: outside on the right
    for side in range(4):
        a, c = corners[side], corners[(side + 1) % 4]
        if shop:
            if side == front:
                length = math.dist(a, c)
                # Whole shop fronts: stretch the tile so the wall holds an integer number of them.
                n = max(1, round(length / STOREFRONT_TILE_M[0]))
                b.wall(a, c, z0, z0 + SHOP, shop_layer, (length / n, STOREFRONT_TILE_M[1]), tint)
            else:
                b.wall(a, c, z0, z0 + SHOP, Layer.CONCRETE, (4.0, 4.0), tint)
        b.wall(a, c, z0 + base_h, top, facade, FACADE_TILE_M, tint)
    b.ground(x0, y0, x1, y1, top, Layer.ROOF, (8.0, 8.0), tint)
    # A parapet lip and, sometimes, a plant room on the roof: silhouettes against the sky.
    if rng.random() < 0.5 and min(x1 - x0, y1 - y0) > 8:
        w, d = 2 + 3 * rng.random(), 2 + 3 * rng.random()
        cx = x0 + (x1 - x0) * (0.3 + 0.4 * rng.random())
        cy = y0 + (y1 - y0) * (0.3 + 0.4 * rng.random())
        b.box(cx - w / 2, cy - d / 2, cx + w / 2, cy + d / 2, top, top + 2.5, Layer.CONCRETE, Layer.ROOF,
              (4.0, 4.0), (4.0, 4.0), tint)


def add_tree(b: MeshBuilder, x: float, y: float, z0: float, rng: np.random.Generator, scale: float = 1.0) -> None:
    trunk_h = (2.2 + 1.2 * rng.random()) * scale
    b.prism(x, y, 0.14 * scale, z0, z0 + trunk_h + 0.5, 6, Layer.BARK, (1.0, 2.0))
    r = (1.6 + 1.2 * rng.random()) * scale
    green = (0.8 + 0.4 * rng.random(), 0.85 + 0.3 * rng.random(), 0.8 + 0.3 * rng.random())
    b.blob(x, y, z0 + trunk_h + r * 0.8, (r, r, r * (0.9 + 0.4 * rng.random())), rng, Layer.FOLIAGE, green)


def add_street_light(b: MeshBuilder, x: float, y: float, z0: float, toward: Tuple[float, float], height: float = 7.0) -> None:
    """A pole with an arm reaching 1.5 m towards `toward` (a unit xy direction) and a lamp box."""
    b.prism(x, y, 0.09, z0, z0 + height, 6, Layer.METAL, (1.0, 4.0))
    tx, ty = toward
    ex, ey = x + 1.5 * tx, y + 1.5 * ty
    lo, hi = np.minimum([x, y], [ex, ey]) - 0.06, np.maximum([x, y], [ex, ey]) + 0.06
    b.box(lo[0], lo[1], hi[0], hi[1], z0 + height - 0.12, z0 + height, Layer.METAL, Layer.METAL, bottom=True)
    b.box(ex - 0.3, ey - 0.3, ex + 0.3, ey + 0.3, z0 + height - 0.35, z0 + height - 0.1, Layer.METAL, Layer.METAL,
          tint=(1.3, 1.3, 1.25), bottom=True)


def add_car(b: MeshBuilder, x: float, y: float, along_x: bool, rng: np.random.Generator) -> None:
    """A parked car (boxes: body, cabin, wheels) centred at (x, y), 4.3 × 1.8 m."""
    paint = tuple(float(v) for v in rng.choice([[0.9, 0.9, 0.9], [0.15, 0.15, 0.17], [0.6, 0.1, 0.1],
                                                [0.2, 0.3, 0.6], [0.55, 0.55, 0.58], [0.85, 0.8, 0.6]]))
    hl, hw = 2.15, 0.9

    def rect(a, c):  # (along, across) half sizes → x0, y0, x1, y1
        return (x - a, y - c, x + a, y + c) if along_x else (x - c, y - a, x + c, y + a)

    b.box(*rect(hl, hw), 0.3, 0.95, Layer.CAR_PAINT, Layer.CAR_PAINT, (2.0, 1.0), (2.0, 2.0), paint)
    b.box(*rect(1.1, 0.8), 0.95, 1.45, Layer.CAR_GLASS, Layer.CAR_PAINT, (2.0, 1.0), (2.0, 2.0), paint)
    for sa in (-1, 1):
        for sc in (-1, 1):
            ca, cc = sa * 1.35, sc * 0.75
            wx0, wy0, wx1, wy1 = rect(0.33, 0.15)
            dx, dy = (ca, cc) if along_x else (cc, ca)
            b.box(wx0 + dx, wy0 + dy, wx1 + dx, wy1 + dy, 0.0, 0.62, Layer.ASPHALT, Layer.ASPHALT,
                  tint=(0.35, 0.35, 0.35))


def add_bench(b: MeshBuilder, x: float, y: float, along_x: bool, z0: float = 0.0) -> None:
    a, c = (0.9, 0.25) if along_x else (0.25, 0.9)
    b.box(x - a, y - c, x + a, y + c, z0 + 0.42, z0 + 0.5, Layer.WOOD, Layer.WOOD, (1.0, 1.0), (1.0, 1.0))
    la, lc = (0.05, 0.2) if along_x else (0.2, 0.05)
    for s in (-1, 1):
        lx, ly = (x + s * 0.7, y) if along_x else (x, y + s * 0.7)
        b.box(lx - la, ly - lc, lx + la, ly + lc, z0, z0 + 0.42, Layer.CONCRETE, Layer.CONCRETE)


# --- city ---------------------------------------------------------------------------------------------

def build_city(route: CityRoute, rng: np.random.Generator, params: CityParams = CityParams()) -> Mesh:
    """The street grid around `route`, with the route's intersections at node · spacing."""
    S, hw, sw, kerb = route.spacing, params.road_half_width, params.sidewalk, params.kerb
    b = MeshBuilder(params.tile_size)
    lo = route.nodes.min(0) - params.margin_blocks
    hi = route.nodes.max(0) + params.margin_blocks
    span_lo, span_hi = lo * S - 600.0, hi * S + 600.0
    b.ground(span_lo[0], span_lo[1], span_hi[0], span_hi[1], -0.03, Layer.GRASS, (6.0, 6.0))

    # District height: taller towards a random downtown.
    downtown = (lo + (hi - lo) * rng.random(2)) * S
    reach = max(float(np.max(hi - lo)) * S * 0.5, S)

    # Only blocks within `margin_blocks` rings of the route are built: a long loop encloses many
    # blocks that no camera ever sees. built[i, j] is block (lo + (i, j)); padded by one on each side.
    ii, jj = np.meshgrid(np.arange(lo[0], hi[0]), np.arange(lo[1], hi[1]), indexing="ij")
    centres = np.stack([ii + 0.5, jj + 0.5], -1).reshape(-1, 1, 2)
    rings = np.abs(centres - route.nodes[None]).max(-1).min(-1).reshape(ii.shape)
    built = np.zeros((ii.shape[0] + 2, ii.shape[1] + 2), bool)
    built[1:-1, 1:-1] = rings <= params.margin_blocks

    def block_built(i: int, j: int) -> bool:
        return bool(built[i - lo[0] + 1, j - lo[1] + 1])

    # Roads: segments between neighbouring intersections and the intersection squares, wherever a
    # neighbouring block is built.
    for i in range(lo[0], hi[0] + 1):
        for j in range(lo[1], hi[1] + 1):
            if not (block_built(i, j) or block_built(i - 1, j) or block_built(i, j - 1) or block_built(i - 1, j - 1)):
                continue
            x, y = i * S, j * S
            b.ground(x - hw, y - hw, x + hw, y + hw, 0.0, Layer.ASPHALT, (ROAD_TILE_ALONG_M, ROAD_TILE_ALONG_M))
            if i < hi[0] and (block_built(i, j) or block_built(i, j - 1)):  # eastward: u along x, v south → north
                c = np.array([[x + hw, y - hw, 0], [x + S - hw, y - hw, 0], [x + S - hw, y + hw, 0], [x + hw, y + hw, 0]])
                uv = np.array([[0, 0], [(S - 2 * hw) / ROAD_TILE_ALONG_M, 0], [(S - 2 * hw) / ROAD_TILE_ALONG_M, 1], [0, 1]])
                b.quads(c[None], uv[None], Layer.ROAD)
            if j < hi[1] and (block_built(i, j) or block_built(i - 1, j)):  # northward: u along y, v east → west
                c = np.array([[x + hw, y + hw, 0], [x + hw, y + S - hw, 0], [x - hw, y + S - hw, 0], [x - hw, y + hw, 0]])
                uv = np.array([[0, 0], [(S - 2 * hw) / ROAD_TILE_ALONG_M, 0], [(S - 2 * hw) / ROAD_TILE_ALONG_M, 1], [0, 1]])
                b.quads(c[None], uv[None], Layer.ROAD)

    # Parked cars in the kerb lanes of every road segment.
    lane = hw - 1.1
    for i in range(lo[0], hi[0] + 1):
        for j in range(lo[1], hi[1] + 1):
            for along_x in (True, False):
                if (along_x and i == hi[0]) or (not along_x and j == hi[1]):
                    continue
                if not (block_built(i, j) or (block_built(i, j - 1) if along_x else block_built(i - 1, j))):
                    continue
                for side in (-1, 1):
                    if rng.random() > params.car_probability:
                        continue
                    t = 16.0 + 6 * rng.random()
                    while t < S - 16.0:
                        if rng.random() < 0.7:
                            x, y = (i * S + t, j * S + side * lane) if along_x else (i * S + side * lane, j * S + t)
                            add_car(b, x, y, along_x, rng)
                        t += 5.5 + 3 * rng.random()

    # Blocks: a kerbed pavement slab, then buildings or a park.
    for i in range(lo[0], hi[0]):
        for j in range(lo[1], hi[1]):
            if not block_built(i, j):
                continue
            x0, y0, x1, y1 = i * S + hw, j * S + hw, (i + 1) * S - hw, (j + 1) * S - hw
            b.box(x0, y0, x1, y1, 0.0, kerb, Layer.CONCRETE, Layer.PAVEMENT, (2.0, 2.0), (4.0, 4.0))
            fx0, fy0, fx1, fy1 = x0 + sw, y0 + sw, x1 - sw, y1 - sw  # frontage lines
            _street_furniture(b, (x0, y0, x1, y1), kerb, rng, params)
            if rng.random() < params.park_probability:
                b.box(fx0, fy0, fx1, fy1, kerb, kerb + 0.3, Layer.CONCRETE, Layer.GRASS, (2.0, 2.0), (6.0, 6.0))
                for _ in range(int(rng.integers(10, 25))):
                    add_tree(b, fx0 + 3 + (fx1 - fx0 - 6) * rng.random(), fy0 + 3 + (fy1 - fy0 - 6) * rng.random(),
                             kerb + 0.3, rng, 1.0 + 0.4 * rng.random())
                continue
            centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
            tall = max(0.0, 1 - np.linalg.norm(centre - downtown) / reach)
            _line_block(b, (fx0, fy0, fx1, fy1), kerb, tall, rng, params)
    return b.build()


def _street_furniture(b: MeshBuilder, block: Tuple[float, float, float, float], kerb: float,
                      rng: np.random.Generator, params: CityParams) -> None:
    """Trees and street lights on the pavement along the four kerbs of a block."""
    x0, y0, x1, y1 = block
    # Each kerb: start, direction along it, inward normal.
    edges = [((x0, y0), (1, 0), (0, 1), x1 - x0), ((x1, y0), (0, 1), (-1, 0), y1 - y0),
             ((x1, y1), (-1, 0), (0, -1), x1 - x0), ((x0, y1), (0, -1), (1, 0), y1 - y0)]
    for (sx, sy), (dx, dy), (nx, ny), length in edges:
        if rng.random() < params.tree_street_probability:
            t = 6.0 + 4 * rng.random()
            while t < length - 6.0:
                add_tree(b, sx + dx * t + nx * 1.6, sy + dy * t + ny * 1.6, kerb, rng)
                t += 8.0 + 6.0 * rng.random()
        t = 10.0 + 10 * rng.random()
        while t < length - 8.0:
            add_street_light(b, sx + dx * t + nx * 0.5, sy + dy * t + ny * 0.5, kerb, (-nx, -ny))
            t += 25.0 + 10 * rng.random()


def _line_block(b: MeshBuilder, frontage: Tuple[float, float, float, float], kerb: float, tall: float,
                rng: np.random.Generator, params: CityParams) -> None:
    """Buildings along the four frontage lines of a block; the corners belong to the south and
    north rows, the east and west rows stop short of them."""
    fx0, fy0, fx1, fy1 = frontage
    max_depth = min(6 * BAY, (fy1 - fy0) / 2 - 1)
    corner = max_depth
    rows = [  # (front side, run start, run end, along-x?)
        (0, fx0, fx1, True), (2, fx0, fx1, True), (1, fy0 + corner, fy1 - corner, False), (3, fy0 + corner, fy1 - corner, False)]
    for front, start, end, along_x in rows:
        t = start
        while end - t >= 2 * BAY:
            if rng.random() < params.gap_probability:
                t += 2 + 4 * rng.random()
                continue
            bays = int(rng.integers(3, 9))
            width = min(bays * BAY, (end - t) // BAY * BAY)
            if end - t - width < 2 * BAY:  # do not leave a sliver
                width = (end - t) // BAY * BAY
            depth = min(int(rng.integers(3, 7)) * BAY, max_depth)
            setback = 0.0 if rng.random() < 0.6 else float(rng.uniform(0.5, 2.0))
            base = 2 + 8 * tall
            storeys = int(np.clip(rng.integers(int(base) - 1, int(base) + 4), 1, 14))
            shop = rng.random() < params.shop_probability
            if along_x:
                if front == 0:
                    bx0, by0, bx1, by1 = t, fy0 + setback, t + width, fy0 + setback + depth
                else:
                    bx0, by0, bx1, by1 = t, fy1 - setback - depth, t + width, fy1 - setback
            else:
                if front == 1:
                    bx0, by0, bx1, by1 = fx1 - setback - depth, t, fx1 - setback, t + width
                else:
                    bx0, by0, bx1, by1 = fx0 + setback, t, fx0 + setback + depth, t + width
            add_building(b, bx0, by0, bx1, by1, front, storeys, shop, rng, z0=kerb)
            t += width


# --- walk ----------------------------------------------------------------------------------------------

def build_walk(path: PlanarPath, rng: np.random.Generator, params: WalkParams = WalkParams()) -> Mesh:
    """A courtyard around `path`: buildings on its bounding box grown by `params.margin`."""
    b = MeshBuilder(params.tile_size)
    dense = path.points[:: max(1, len(path.points) // 20000)]
    tree = cKDTree(dense)
    lo = dense.min(0) - params.margin
    hi = dense.max(0) + params.margin
    b.ground(lo[0] - 40, lo[1] - 40, hi[0] + 40, hi[1] + 40, 0.0, Layer.COBBLES, (4.0, 4.0))

    # Buildings around the courtyard, facing in, 12 m deep.
    depth = 12.0
    ring = [  # (front side, fixed coordinate, run start, run end, along x?)
        (2, lo[1] - depth, lo[0] - depth, hi[0] + depth, True), (0, hi[1], lo[0] - depth, hi[0] + depth, True),
        (1, lo[0] - depth, lo[1], hi[1], False), (3, hi[0], lo[1], hi[1], False)]
    for front, fixed, start, end, along_x in ring:
        t = start
        while t < end - 0.1:
            width = min(int(rng.integers(3, 7)) * BAY, end - t)
            if end - t - width < BAY:
                width = end - t
            storeys = int(rng.integers(2, 6))
            shop = rng.random() < 0.5
            if along_x:
                add_building(b, t, fixed, t + width, fixed + depth, front, storeys, shop, rng)
            else:
                add_building(b, fixed, t, fixed + depth, t + width, front, storeys, shop, rng)
            t += width

    placed: List[Tuple[float, float, float]] = []  # (x, y, radius)

    def free(x: float, y: float, r: float) -> bool:
        if not (lo[0] + r < x < hi[0] - r and lo[1] + r < y < hi[1] - r):
            return False
        if tree.query([x, y])[0] < r + params.clearance:
            return False
        return all(math.hypot(x - px, y - py) > r + pr + 0.6 for px, py, pr in placed)

    # An arcade along one side: pillars 3.5 m in front of the buildings under a roof slab.
    side = int(rng.integers(0, 4))
    if side in (0, 2):
        y_line = lo[1] + 3.5 if side == 0 else hi[1] - 3.5
        y_wall = lo[1] if side == 0 else hi[1]
        ya, yb = sorted((y_line, y_wall))
        b.box(lo[0], ya - 0.3, hi[0], yb + 0.3, 4.2, 4.6, Layer.CONCRETE, Layer.ROOF, (4.0, 4.0), (4.0, 4.0), bottom=True)
        for x in np.arange(lo[0] + 1.6, hi[0] - 1.0, BAY):
            if tree.query([x, y_line])[0] > 0.3 + params.clearance:
                b.box(x - 0.25, y_line - 0.25, x + 0.25, y_line + 0.25, 0.0, 4.2, Layer.CONCRETE, Layer.CONCRETE)
        placed += [(float(x), float(y), 1.8) for x in np.arange(lo[0], hi[0], 3.0) for y in (ya, yb)]
    else:
        x_line = lo[0] + 3.5 if side == 3 else hi[0] - 3.5
        x_wall = lo[0] if side == 3 else hi[0]
        xa, xb = sorted((x_line, x_wall))
        b.box(xa - 0.3, lo[1], xb + 0.3, hi[1], 4.2, 4.6, Layer.CONCRETE, Layer.ROOF, (4.0, 4.0), (4.0, 4.0), bottom=True)
        for y in np.arange(lo[1] + 1.6, hi[1] - 1.0, BAY):
            if tree.query([x_line, y])[0] > 0.3 + params.clearance:
                b.box(x_line - 0.25, y - 0.25, x_line + 0.25, y + 0.25, 0.0, 4.2, Layer.CONCRETE, Layer.CONCRETE)
        placed += [(float(x), float(y), 1.8) for y in np.arange(lo[1], hi[1], 3.0) for x in (xa, xb)]

    area = float(np.prod(hi - lo))
    kinds = ["tree", "tree", "bench", "lamp", "lamp", "bollards", "planter", "fountain", "pavilion"]
    radius = {"tree": 1.1, "bench": 1.0, "lamp": 0.4, "bollards": 0.8, "planter": 1.0, "fountain": 3.0, "pavilion": 3.4}
    target = int(area * params.object_density)
    big_left = {"fountain": 1 + int(area > 4000), "pavilion": 1 + int(area / 2500)}
    for _ in range(target * 20):
        if target <= 0:
            break
        kind = kinds[int(rng.integers(0, len(kinds)))]
        if kind in big_left and big_left[kind] <= 0:
            continue
        r = radius[kind]
        x, y = lo + (hi - lo) * rng.random(2)
        if not free(x, y, r):
            continue
        placed.append((float(x), float(y), r))
        target -= 1
        if kind in big_left:
            big_left[kind] -= 1
        _add_walk_object(b, kind, float(x), float(y), rng)
    return b.build()


def _add_walk_object(b: MeshBuilder, kind: str, x: float, y: float, rng: np.random.Generator) -> None:
    if kind == "tree":
        b.box(x - 0.8, y - 0.8, x + 0.8, y + 0.8, 0.0, 0.5, Layer.CONCRETE, Layer.SOIL, (2.0, 2.0), (2.0, 2.0))
        add_tree(b, x, y, 0.5, rng, 0.8 + 0.3 * rng.random())
    elif kind == "bench":
        add_bench(b, x, y, bool(rng.random() < 0.5))
    elif kind == "lamp":
        b.prism(x, y, 0.07, 0.0, 3.8, 6, Layer.METAL, (1.0, 2.0))
        b.box(x - 0.2, y - 0.2, x + 0.2, y + 0.2, 3.8, 4.3, Layer.CAR_GLASS, Layer.METAL, tint=(2.0, 2.0, 1.8))
    elif kind == "bollards":
        for k in range(3):
            b.prism(x + (k - 1) * 0.6, y, 0.1, 0.0, 0.9, 6, Layer.METAL, (1.0, 1.0), top_layer=Layer.METAL)
    elif kind == "planter":
        b.box(x - 0.9, y - 0.45, x + 0.9, y + 0.45, 0.0, 0.6, Layer.WOOD, Layer.SOIL, (1.0, 1.0), (1.0, 1.0))
        for k in range(3):
            b.blob(x + (k - 1) * 0.55, y, 0.8, (0.35, 0.35, 0.3), rng, Layer.FOLIAGE)
    elif kind == "fountain":
        r = 2.2 + 0.6 * rng.random()
        b.prism(x, y, r, 0.0, 0.6, 12, Layer.CONCRETE, (2.0, 1.0), top_layer=Layer.CAR_GLASS)
        b.prism(x, y, 0.4, 0.6, 2.0, 8, Layer.CONCRETE, (1.0, 1.0), top_layer=Layer.CONCRETE)
        b.prism(x, y, 0.9, 2.0, 2.2, 8, Layer.CONCRETE, (1.0, 1.0), top_layer=Layer.CONCRETE)
    elif kind == "pavilion":
        _add_pavilion(b, x, y, rng)


def _add_pavilion(b: MeshBuilder, x: float, y: float, rng: np.random.Generator) -> None:
    """A small room (4.5 × 3.8 m, 3 m high) with a doorway on one side and a flat roof."""
    a, c, t, h = 2.25, 1.9, 0.15, 3.0
    layer = facade_layer(int(rng.integers(0, 64)))
    tint = _tint(rng)
    x0, y0, x1, y1 = x - a, y - c, x + a, y + c
    door = int(rng.integers(0, 4))
    walls = [(x0, y0, x1, y0 + t), (x1 - t, y0, x1, y1), (x0, y1 - t, x1, y1), (x0, y0, x0 + t, y1)]
    for k, (wx0, wy0, wx1, wy1) in enumerate(walls):
        if k == door:  # split the wall around a 1.1 m doorway in its middle
            if k in (0, 2):
                mid = (wx0 + wx1) / 2
                b.box(wx0, wy0, mid - 0.55, wy1, 0.0, h, layer, Layer.CONCRETE, (BAY, BAY), tint=tint)
                b.box(mid + 0.55, wy0, wx1, wy1, 0.0, h, layer, Layer.CONCRETE, (BAY, BAY), tint=tint)
                b.box(mid - 0.55, wy0, mid + 0.55, wy1, 2.2, h, Layer.CONCRETE, Layer.CONCRETE, tint=tint, bottom=True)
            else:
                mid = (wy0 + wy1) / 2
                b.box(wx0, wy0, wx1, mid - 0.55, 0.0, h, layer, Layer.CONCRETE, (BAY, BAY), tint=tint)
                b.box(wx0, mid + 0.55, wx1, wy1, 0.0, h, layer, Layer.CONCRETE, (BAY, BAY), tint=tint)
                b.box(wx0, mid - 0.55, wx1, mid + 0.55, 2.2, h, Layer.CONCRETE, Layer.CONCRETE, tint=tint, bottom=True)
        else:
            b.box(wx0, wy0, wx1, wy1, 0.0, h, layer, Layer.CONCRETE, (BAY, BAY), tint=tint)
    b.box(x0 - 0.2, y0 - 0.2, x1 + 0.2, y1 + 0.2, h, h + 0.25, Layer.CONCRETE, Layer.ROOF, (4.0, 4.0), (4.0, 4.0), tint,
          bottom=True)
    add_bench(b, x, y + (c - 0.6) * (1 if door != 2 else -1), True)
