"""Procedural material textures for the synthetic worlds, drawn from a seed with numpy.

All materials live in one texture array (L, S, S, 4) uint8 so that a whole scene renders in a few
draw calls: each vertex names its layer. Textures tile (noise is periodic) because surfaces repeat
them in world units. Row 0 of each layer is the top of the image (v = 1 in GL terms; the renderer
flips on upload). Facades repeat a window pattern, as real ones do; the renderer breaks the exact
periodicity with a low-frequency grime texture sampled in world coordinates.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Tuple

import numpy as np

TEXTURE_SIZE = 256
FACADE_VARIANTS = 6
STOREFRONT_VARIANTS = 3


class Layer(IntEnum):
    """Texture-array layer of each material. Facade/storefront variants follow their first layer."""

    ASPHALT = 0
    ROAD = 1           # asphalt with lane markings; u along the road, v across its full width
    PAVEMENT = 2       # sidewalk slabs, 4 × 4 per texture
    GRASS = 3
    BARK = 4
    FOLIAGE = 5
    CONCRETE = 6
    METAL = 7
    ROOF = 8
    CAR_PAINT = 9
    CAR_GLASS = 10
    COBBLES = 11       # walk scene ground
    WOOD = 12
    SOIL = 13
    GRIME = 14         # low-frequency modulation, sampled in world coordinates by the shader
    CLOUDS = 15        # sky, sampled by view direction
    FACADE = 16        # FACADE .. FACADE + FACADE_VARIANTS - 1
    STOREFRONT = FACADE + FACADE_VARIANTS


NUM_LAYERS = int(Layer.STOREFRONT) + STOREFRONT_VARIANTS

# World size (metres) covered by one repetition of a texture, (along u, along v).
FACADE_TILE_M = (6.4, 6.4)       # 2 window columns × 2 storeys of 3.2 m
STOREFRONT_TILE_M = (8.0, 4.5)   # one shop front, the ground storey
ROAD_TILE_ALONG_M = 12.0         # one dash period of the centre line


def tileable_noise(rng: np.random.Generator, size: int, cells: int, octaves: int = 4) -> np.ndarray:
    """Periodic fractal value noise (size, size) in [0, 1]: octave k has cells·2^k lattice cells."""
    out = np.zeros((size, size))
    amp, total = 1.0, 0.0
    for k in range(octaves):
        c = min(cells * 2 ** k, size)
        lattice = rng.random((c, c))
        t = np.arange(size) * c / size
        i0 = np.floor(t).astype(int)
        f = t - i0
        f = f * f * (3 - 2 * f)  # smoothstep, so the lattice does not show as creases
        i1 = (i0 + 1) % c
        rows0 = lattice[i0][:, i0] * (1 - f)[None, :] + lattice[i0][:, i1] * f[None, :]
        rows1 = lattice[i1][:, i0] * (1 - f)[None, :] + lattice[i1][:, i1] * f[None, :]
        out += amp * (rows0 * (1 - f)[:, None] + rows1 * f[:, None])
        total += amp
        amp *= 0.5
    return out / total


def _rgb(base, shade: np.ndarray) -> np.ndarray:
    """Base colour (3,) in [0, 1] modulated by shade (H, W) → (H, W, 3)."""
    return np.asarray(base, dtype=np.float64)[None, None, :] * shade[..., None]


def _rect(img: np.ndarray, y0: int, y1: int, x0: int, x1: int, color) -> None:
    img[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = color


def _asphalt(rng, s):
    n = tileable_noise(rng, s, 8)
    speck = rng.random((s, s))
    shade = 0.75 + 0.35 * n + 0.15 * (speck > 0.93) - 0.1 * (speck < 0.05)
    return _rgb((0.33, 0.33, 0.35), shade)


def _road(rng, s):
    img = _asphalt(rng, s)
    # v across the road (rows), u along it (columns). Edge lines solid, centre line dashed 40 %.
    line = np.array([0.85, 0.85, 0.8])
    w = max(s // 64, 2)
    img[int(0.04 * s):int(0.04 * s) + w] = line
    img[int(0.96 * s) - w:int(0.96 * s)] = line
    img[s // 2 - w // 2:s // 2 - w // 2 + w, : int(0.4 * s)] = line
    wear = tileable_noise(rng, s, 16, 2)[..., None]
    return img * (0.9 + 0.2 * wear)


def _slabs(rng, s, per_side, base, gap_shade=0.55, jitter=0.12):
    n = tileable_noise(rng, s, 8)
    img = _rgb(base, 0.85 + 0.3 * n)
    cell = s // per_side
    for i in range(per_side):
        for j in range(per_side):
            img[i * cell:(i + 1) * cell, j * cell:(j + 1) * cell] *= 1 + jitter * (rng.random() - 0.5) * 2
    g = max(cell // 24, 1)
    for k in range(per_side):
        img[k * cell:k * cell + g] *= gap_shade
        img[:, k * cell:k * cell + g] *= gap_shade
    return img


def _cobbles(rng, s):
    img = _slabs(rng, s, 16, (0.52, 0.48, 0.44), gap_shade=0.45, jitter=0.25)
    # Offset every other row by half a stone: a running bond.
    cell = s // 16
    for r in range(1, 16, 2):
        img[r * cell:(r + 1) * cell] = np.roll(img[r * cell:(r + 1) * cell], cell // 2, axis=1)
    return img


def _grass(rng, s):
    n = tileable_noise(rng, s, 8)
    blades = rng.random((s, s))
    return _rgb((0.30, 0.45, 0.18), 0.7 + 0.4 * n + 0.2 * (blades - 0.5))


def _bark(rng, s):
    n = tileable_noise(rng, s, 4)
    streaks = tileable_noise(rng, s, 32, 2)
    streak = np.repeat(streaks[:1], s, axis=0)  # vertical grain
    return _rgb((0.36, 0.27, 0.19), 0.6 + 0.3 * n + 0.4 * streak)


def _foliage(rng, s):
    n = tileable_noise(rng, s, 8, 5)
    leaves = tileable_noise(rng, s, 64, 1)
    img = _rgb((0.22, 0.40, 0.14), 0.5 + 0.6 * n + 0.35 * (leaves - 0.5))
    img[..., 0] += 0.08 * (n - 0.5)
    return img


def _plain(rng, s, base, amount=0.3, cells=8):
    return _rgb(base, 1 - amount / 2 + amount * tileable_noise(rng, s, cells))


def _wood(rng, s):
    grain = tileable_noise(rng, s, 4, 3)
    rings = 0.5 + 0.5 * np.sin(np.linspace(0, 24 * np.pi, s, endpoint=False)[:, None] + 6 * grain)
    img = _rgb((0.50, 0.34, 0.20), 0.7 + 0.3 * rings)
    cell = s // 4
    for k in range(4):
        img[k * cell:k * cell + 3] *= 0.4  # plank gaps
    return img


def _clouds(rng, s):
    n = tileable_noise(rng, s, 4, 6)
    cover = np.clip((n - 0.45) * 3.0, 0, 1)
    return np.repeat(cover[..., None], 3, axis=2)


def _grime(rng, s):
    return np.repeat(tileable_noise(rng, s, 4, 4)[..., None], 3, axis=2)


def _wall_material(rng, s, style):
    if style == "brick":
        base = np.array([0.55, 0.28, 0.20]) * (0.8 + 0.4 * rng.random())
        img = _plain(rng, s, base, 0.3, 16)
        rows = 48  # 48 courses per two storeys: ~13 cm
        h = s / rows
        for r in range(rows):
            y = int(r * h)
            img[y:y + 1] *= 0.6
            off = (r % 2) * 8
            for x in range(off, s, 16):
                img[y:int((r + 1) * h), x:x + 1] *= 0.65
                img[y:int((r + 1) * h), x + 1:x + 15] *= 0.85 + 0.3 * rng.random()
        return img
    if style == "concrete":
        base = np.full(3, 0.55 + 0.25 * rng.random()) * np.array([1.0, 0.98, 0.95])
        img = _plain(rng, s, base, 0.25, 8)
        for k in range(0, s, s // 4):
            img[k:k + 2] *= 0.75
        return img
    base = np.array([0.82, 0.74, 0.58]) * (0.75 + 0.35 * rng.random())  # plaster
    return _plain(rng, s, base, 0.2, 8)


def _facade(rng, s, variant):
    style = ("brick", "concrete", "plaster", "glass", "brick", "plaster")[variant % 6]
    cell = s // 2  # 2 × 2 window cells
    if style == "glass":
        tint = np.array([0.25, 0.38, 0.45]) * (0.8 + 0.4 * rng.random())
        img = np.zeros((s, s, 3))
        grad = np.linspace(1.25, 0.6, cell)[:, None, None]  # sky reflection, brighter at the top
        for i in range(2):
            for j in range(2):
                img[i * cell:(i + 1) * cell, j * cell:(j + 1) * cell] = tint * grad * (0.85 + 0.3 * rng.random())
        img += 0.15 * tileable_noise(rng, s, 4)[..., None]
        mullion = np.array([0.7, 0.7, 0.72])
        for k in range(0, s, cell // 2):
            img[:, k:k + 3] = mullion
        for k in range(0, s, cell):
            img[k:k + 6] = mullion * 0.9  # floor slab line
        return img
    img = _wall_material(rng, s, style)
    frame = np.array([0.92, 0.92, 0.9]) if rng.random() < 0.5 else np.array([0.2, 0.2, 0.22])
    win_w = int(cell * (0.35 + 0.25 * rng.random()))
    win_h = int(cell * (0.45 + 0.2 * rng.random()))
    top = int(cell * 0.2)
    for i in range(2):
        for j in range(2):
            y0, x0 = i * cell + top, j * cell + (cell - win_w) // 2
            _rect(img, y0 - 3, y0 + win_h + 3, x0 - 3, x0 + win_w + 3, frame)
            lit = rng.random() < 0.2
            glass = np.array([0.85, 0.75, 0.45]) if lit else np.array([0.16, 0.2, 0.25]) * (0.7 + 0.6 * rng.random())
            grad = np.linspace(1.3, 0.7, win_h)[:, None, None]
            img[y0:y0 + win_h, x0:x0 + win_w] = glass * grad
            if rng.random() < 0.4:  # a curtain
                cw = int(win_w * (0.2 + 0.4 * rng.random()))
                img[y0:y0 + win_h, x0:x0 + cw] = np.array([0.7, 0.62, 0.55]) * (0.7 + 0.5 * rng.random())
            img[y0:y0 + win_h, x0 + win_w // 2 - 1:x0 + win_w // 2 + 2] = frame  # mullion
            img[y0 + win_h // 3:y0 + win_h // 3 + 3, x0:x0 + win_w] = frame     # transom
            _rect(img, y0 + win_h + 3, y0 + win_h + 9, x0 - 8, x0 + win_w + 8, np.array([0.8, 0.8, 0.78]))  # sill
        if style != "plaster":
            img[i * cell:i * cell + 4] *= 0.7  # storey band
    return img


def _storefront(rng, s, variant):
    img = _wall_material(rng, s, ("concrete", "plaster", "brick")[variant % 3])
    sign_h = s // 6
    sign = rng.random(3) * 0.7 + 0.15
    img[s // 12:s // 12 + sign_h, 8:s - 8] = sign
    # "Lettering": blocky glyphs in a contrasting colour.
    glyph = 1 - sign
    x = 24
    while x < s - 40:
        w = int(8 + 10 * rng.random())
        if rng.random() < 0.8:
            _rect(img, s // 12 + sign_h // 4, s // 12 + 3 * sign_h // 4, x, x + w, glyph)
        x += w + 5
    top = s // 12 + sign_h + 10
    glass = np.array([0.12, 0.15, 0.18])
    frame = np.array([0.25, 0.25, 0.27])
    _rect(img, top, s - 8, 12, s - 12, frame)
    _rect(img, top + 5, s - 14, 18, int(s * 0.62), glass * np.linspace(1.6, 0.8, s - 14 - top - 5)[:, None, None])
    _rect(img, top + 5, s - 8, int(s * 0.67), s - 18, np.array([0.3, 0.22, 0.15]) * (0.7 + 0.6 * rng.random()))  # door
    # Goods in the display window.
    for _ in range(6):
        y = int(top + 5 + (s - 14 - top - 5) * (0.5 + 0.4 * rng.random()))
        x = int(20 + (s * 0.62 - 40) * rng.random())
        _rect(img, y, min(y + 14, s - 14), x, x + 16, rng.random(3))
    return img


def make_texture_array(seed: int, size: int = TEXTURE_SIZE) -> np.ndarray:
    """All material layers → (NUM_LAYERS, size, size, 4) uint8, deterministic in `seed`."""
    rng = np.random.default_rng([seed, 0x7E87])
    layers = [None] * NUM_LAYERS
    layers[Layer.ASPHALT] = _asphalt(rng, size)
    layers[Layer.ROAD] = _road(rng, size)
    layers[Layer.PAVEMENT] = _slabs(rng, size, 4, (0.62, 0.6, 0.56))
    layers[Layer.GRASS] = _grass(rng, size)
    layers[Layer.BARK] = _bark(rng, size)
    layers[Layer.FOLIAGE] = _foliage(rng, size)
    layers[Layer.CONCRETE] = _plain(rng, size, (0.62, 0.61, 0.58), 0.25)
    layers[Layer.METAL] = _plain(rng, size, (0.45, 0.47, 0.5), 0.15, 4)
    layers[Layer.ROOF] = _plain(rng, size, (0.3, 0.29, 0.28), 0.4, 32)
    layers[Layer.CAR_PAINT] = _plain(rng, size, (0.85, 0.85, 0.85), 0.1, 4)
    layers[Layer.CAR_GLASS] = _plain(rng, size, (0.12, 0.14, 0.17), 0.2, 4)
    layers[Layer.COBBLES] = _cobbles(rng, size)
    layers[Layer.WOOD] = _wood(rng, size)
    layers[Layer.SOIL] = _plain(rng, size, (0.32, 0.24, 0.17), 0.5, 32)
    layers[Layer.GRIME] = _grime(rng, size)
    layers[Layer.CLOUDS] = _clouds(rng, size)
    for v in range(FACADE_VARIANTS):
        layers[Layer.FACADE + v] = _facade(rng, size, v)
    for v in range(STOREFRONT_VARIANTS):
        layers[Layer.STOREFRONT + v] = _storefront(rng, size, v)
    rgb = np.clip(np.stack(layers), 0, 1)
    out = np.empty((NUM_LAYERS, size, size, 4), np.uint8)
    out[..., :3] = np.rint(rgb * 255)
    out[..., 3] = 255
    return out


def facade_layer(variant: int) -> int:
    return int(Layer.FACADE) + variant % FACADE_VARIANTS


def storefront_layer(variant: int) -> int:
    return int(Layer.STOREFRONT) + variant % STOREFRONT_VARIANTS


def layer_names() -> Tuple[str, ...]:
    names = [l.name.lower() for l in Layer if l < Layer.FACADE]
    names += [f"facade{v}" for v in range(FACADE_VARIANTS)] + [f"storefront{v}" for v in range(STOREFRONT_VARIANTS)]
    return tuple(names)
