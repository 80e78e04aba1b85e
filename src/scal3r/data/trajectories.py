"""Camera paths for the synthetic worlds: city routes on a street grid, walking paths, camera poses.

Everything here is in the generator's internal world frame: z up, x east, y north, metres. A path is
a densely sampled planar curve (`PlanarPath`); `camera_poses` turns it into c2w matrices with
OpenCV camera axes (x right, y down, z forward) at a given height, with a speed profile that slows
in turns and small smooth head/vehicle motion.

Trajectory kinds:
- `loop`: a closed circuit; the last frame is one step before the first, so the sequence ends where
  it began (loop closure has the whole start to find).
- `figure8`: two lobes through a common crossing, driven straight through; the sequence crosses its
  own path in the middle and ends at the start, heading the same way.
- `noloop`: an open path that never comes back near itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Tuple

import numpy as np

from scal3r.errors import InputError

TrajectoryKind = Literal["loop", "figure8", "noloop"]
TRAJECTORY_KINDS = ("loop", "figure8", "noloop")


@dataclass(frozen=True)
class PlanarPath:
    """A planar curve sampled every ~5 cm. points: (M, 2) metres; closed: the end joins the start
    (points[-1] ≠ points[0]; the closing segment is implicit)."""

    points: np.ndarray
    closed: bool

    @property
    def cumulative(self) -> np.ndarray:
        """Arc length (M,) at each sample, 0 at the first."""
        d = np.linalg.norm(np.diff(self.points, axis=0), axis=1)
        return np.concatenate([[0.0], np.cumsum(d)])

    @property
    def length(self) -> float:
        """Total length, including the closing segment of a closed path."""
        extra = np.linalg.norm(self.points[-1] - self.points[0]) if self.closed else 0.0
        return float(self.cumulative[-1] + extra)

    def _samples(self) -> Tuple[np.ndarray, np.ndarray]:
        if self.closed:
            pts = np.concatenate([self.points, self.points[:1]])
            s = np.concatenate([self.cumulative, [self.length]])
            return pts, s
        return self.points, self.cumulative

    def at(self, s: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Positions (K, 2) and unit tangents (K, 2) at arc lengths s (K,) (wrapped if closed)."""
        pts, cum = self._samples()
        s = np.asarray(s, dtype=np.float64)
        s = np.mod(s, self.length) if self.closed else np.clip(s, 0, cum[-1])
        pos = np.stack([np.interp(s, cum, pts[:, 0]), np.interp(s, cum, pts[:, 1])], axis=1)
        # Tangent from a symmetric difference over ±0.5 m: smooth across the 5 cm sampling.
        h = 0.5
        a = (s - h) % self.length if self.closed else np.clip(s - h, 0, cum[-1])
        b = (s + h) % self.length if self.closed else np.clip(s + h, 0, cum[-1])
        pa = np.stack([np.interp(a, cum, pts[:, 0]), np.interp(a, cum, pts[:, 1])], axis=1)
        pb = np.stack([np.interp(b, cum, pts[:, 0]), np.interp(b, cum, pts[:, 1])], axis=1)
        tangent = pb - pa
        return pos, tangent / np.maximum(np.linalg.norm(tangent, axis=1, keepdims=True), 1e-12)

    def curvature(self, s: np.ndarray, h: float = 2.0) -> np.ndarray:
        """Unsigned curvature (K,) in 1/m at arc lengths s, from tangents ±h metres apart."""
        _, t0 = self.at(np.asarray(s) - h)
        _, t1 = self.at(np.asarray(s) + h)
        cross = t0[:, 0] * t1[:, 1] - t0[:, 1] * t1[:, 0]
        dot = np.sum(t0 * t1, axis=1)
        return np.abs(np.arctan2(cross, dot)) / (2 * h)

    def truncated(self, length: float) -> "PlanarPath":
        """The open path from the start up to arc length `length` (the whole path if longer)."""
        cum = self.cumulative
        if self.closed or length >= cum[-1]:
            return self
        k = int(np.searchsorted(cum, length, side="right"))
        end, _ = self.at(np.array([length]))
        return PlanarPath(np.concatenate([self.points[:k], end]), False)

    def offset(self, distance: float) -> "PlanarPath":
        """The parallel curve `distance` metres to the right of the direction of travel."""
        _, tangent = self.at(self.cumulative)
        right = np.stack([tangent[:, 1], -tangent[:, 0]], axis=1)
        return PlanarPath(self.points + distance * right, self.closed)


def smooth_polyline(vertices: np.ndarray, radius: float, closed: bool, spacing: float = 0.05) -> PlanarPath:
    """Polyline (K, 2) with every corner replaced by a circular arc of `radius` (shrunk where the
    neighbouring segments are too short), sampled every `spacing` metres."""
    v = np.asarray(vertices, dtype=np.float64)
    # Drop repeated vertices (collinear ones are kept but get no arc).
    keep = [v[0]]
    for p in v[1:]:
        if np.linalg.norm(p - keep[-1]) > 1e-9:
            keep.append(p)
    v = np.asarray(keep)
    if closed and np.linalg.norm(v[-1] - v[0]) < 1e-9:
        v = v[:-1]
    k = len(v)
    if k < 2:
        raise InputError("a path needs at least two distinct points")
    corners = range(k) if closed else range(1, k - 1)
    # For each corner: the arc's start and end points and centre.
    arcs = {}
    for i in corners:
        p, a, b = v[i], v[i - 1], v[(i + 1) % k]
        d_in, d_out = p - a, b - p
        l_in, l_out = np.linalg.norm(d_in), np.linalg.norm(d_out)
        u_in, u_out = d_in / l_in, d_out / l_out
        turn = math.atan2(u_in[0] * u_out[1] - u_in[1] * u_out[0], float(np.dot(u_in, u_out)))
        if abs(turn) < 1e-6 or radius <= 0:
            continue
        r = min(radius, 0.49 * min(l_in, l_out) / math.tan(abs(turn) / 2))
        t = r * math.tan(abs(turn) / 2)
        start, end = p - u_in * t, p + u_out * t
        normal = np.array([-u_in[1], u_in[0]]) * math.copysign(1.0, turn)  # towards the centre
        arcs[i] = (start, end, start + normal * r, r, turn)
    pieces = []
    for i in range(k):
        if i in arcs:
            start, end, centre, r, turn = arcs[i]
            a0 = math.atan2(start[1] - centre[1], start[0] - centre[0])
            n = max(int(abs(turn) * r / spacing), 2)
            ang = a0 + turn * np.arange(n) / n
            pieces.append(centre + r * np.stack([np.cos(ang), np.sin(ang)], axis=1))
            seg_start = end
        else:
            seg_start = v[i]
        j = (i + 1) % k
        if not closed and i == k - 1:
            pieces.append(v[i][None])
            break
        seg_end = arcs[j][0] if j in arcs else v[j]
        length = np.linalg.norm(seg_end - seg_start)
        n = max(int(length / spacing), 1)
        pieces.append(seg_start + (seg_end - seg_start) * (np.arange(n) / n)[:, None])
    return PlanarPath(np.concatenate(pieces), closed)


# --- city routes on a street grid ----------------------------------------------------------------

@dataclass(frozen=True)
class CityRoute:
    """nodes: (K, 2) integer grid coordinates of the intersections visited in order (for a closed
    route the last node is not repeated); spacing: metres between neighbouring intersections."""

    nodes: np.ndarray
    spacing: float
    closed: bool

    def polyline(self) -> np.ndarray:
        """(K, 2) metres: intersection centres."""
        return self.nodes.astype(np.float64) * self.spacing


def _rectangle_nodes(a: int, b: int) -> np.ndarray:
    """Counter-clockwise perimeter of the a × b cell rectangle from (0, 0), every grid node."""
    pts = [(i, 0) for i in range(a)] + [(a, j) for j in range(b)]
    pts += [(a - i, b) for i in range(a)] + [(0, b - j) for j in range(b)]
    return np.asarray(pts)


def _figure8_nodes(a: int, b: int) -> np.ndarray:
    """Two a × b lobes through (0, 0): the first counter-clockwise, the second clockwise, so the
    crossing is driven straight through both times."""
    lobe1 = [(i, 0) for i in range(a)] + [(a, j) for j in range(b)] + [(a - i, b) for i in range(a)] + \
            [(0, b - j) for j in range(b)]
    lobe2 = [(0, -j) for j in range(b)] + [(-i, -b) for i in range(a)] + [(-a, -b + j) for j in range(b)] + \
            [(-a + i, 0) for i in range(a)]
    return np.asarray(lobe1 + lobe2)


def _staircase_nodes(edges: int, rng: np.random.Generator) -> np.ndarray:
    """An open monotone route east and north (never revisits a node): runs of 1–3 blocks."""
    pts = [(0, 0)]
    direction = 0
    while len(pts) <= edges:
        run = int(rng.integers(1, 4)) if direction == 0 else int(rng.integers(1, 3))
        for _ in range(run):
            x, y = pts[-1]
            pts.append((x + 1, y) if direction == 0 else (x, y + 1))
        direction = 1 - direction
    return np.asarray(pts[:edges + 1])


def _transform_nodes(nodes: np.ndarray, rng: np.random.Generator, closed: bool) -> np.ndarray:
    """Random quarter-turn and mirror of a route (varies the turn directions by seed)."""
    quarter = int(rng.integers(0, 4))
    rot = np.array([[0, -1], [1, 0]]) if quarter % 2 else np.eye(2, dtype=int)
    if quarter >= 2:
        rot = -rot
    out = nodes @ rot.T
    if rng.random() < 0.5:
        out = out * np.array([1, -1])
    return out - out.min(axis=0)


def plan_city_route(kind: TrajectoryKind, target_length: float, rng: np.random.Generator,
                    preferred_spacing: float = 100.0, spacing_range: Tuple[float, float] = (60.0, 140.0)) -> CityRoute:
    """A route of intersections whose centre-line length is about `target_length` metres.

    Closed routes pick the rectangle (or figure-eight lobes) and the block spacing that fit the
    length; the caller fine-tunes the spacing (`path_for_city_route`)."""
    if kind == "loop":
        count = max(2, round(target_length / (2 * preferred_spacing)))
        a = (count + 1) // 2
        nodes = _rectangle_nodes(a, count - a)
        spacing = target_length / (2 * count)
    elif kind == "figure8":
        count = max(2, round(target_length / (4 * preferred_spacing)))
        a = (count + 1) // 2
        nodes = _figure8_nodes(a, count - a)
        spacing = target_length / (4 * count)
    elif kind == "noloop":
        spacing = preferred_spacing
        nodes = _staircase_nodes(int(math.ceil(target_length / spacing)) + 1, rng)
    else:
        raise InputError(f"unknown trajectory {kind!r} (choose {', '.join(TRAJECTORY_KINDS)})")
    spacing = float(np.clip(spacing, *spacing_range))
    return CityRoute(_transform_nodes(nodes, rng, kind != "noloop"), spacing, kind != "noloop")


def path_for_city_route(route: CityRoute, lane_offset: float, turn_radius: float) -> PlanarPath:
    """The driven path: intersection-to-intersection centre line with filleted corners, shifted
    `lane_offset` metres to the right (driving on the right)."""
    centre = smooth_polyline(route.polyline(), turn_radius, route.closed)
    return centre.offset(lane_offset)


def fit_city_route(route: CityRoute, target_length: float, lane_offset: float, turn_radius: float,
                   spacing_range: Tuple[float, float] = (60.0, 140.0)) -> Tuple[CityRoute, PlanarPath]:
    """Adjust a closed route's spacing so that the driven path is `target_length` long (path length
    is affine in the spacing); open routes are returned as they are."""
    path = path_for_city_route(route, lane_offset, turn_radius)
    if not route.closed:
        return route, path
    probe = CityRoute(route.nodes, route.spacing + 1.0, True)
    slope = path_for_city_route(probe, lane_offset, turn_radius).length - path.length
    spacing = float(np.clip(route.spacing + (target_length - path.length) / slope, *spacing_range))
    route = CityRoute(route.nodes, spacing, True)
    return route, path_for_city_route(route, lane_offset, turn_radius)


# --- walking paths ---------------------------------------------------------------------------------

def plan_walk_path(kind: TrajectoryKind, target_length: float, rng: np.random.Generator) -> PlanarPath:
    """A pedestrian path of about `target_length` metres (exact for closed paths) starting near (0, 0)."""
    if kind == "loop":
        n = int(rng.integers(5, 8))
        ang = 2 * np.pi * (np.arange(n) + 0.3 * rng.random(n)) / n
        rad = 1 + 0.25 * (rng.random(n) - 0.5)
        verts = np.stack([1.4 * rad * np.cos(ang), rad * np.sin(ang)], axis=1)
        base = smooth_polyline(verts, 0.25, closed=True, spacing=0.002)
    elif kind == "figure8":
        t = np.linspace(0, 2 * np.pi, 4000, endpoint=False)
        # Lemniscate of Gerono: crosses itself at the origin.
        base = PlanarPath(np.stack([np.sin(t), 0.6 * np.sin(t) * np.cos(t)], axis=1), closed=True)
    elif kind == "noloop":
        # Headings stay within ±60° of east, so x only grows and the path never returns.
        seg = 8 + 8 * rng.random(int(target_length / 8) + 4)
        heading = np.clip(np.cumsum(rng.uniform(-0.8, 0.8, seg.size)), -1.0, 1.0)
        verts = np.concatenate([[[0.0, 0.0]], np.cumsum(seg[:, None] * np.stack([np.cos(heading), np.sin(heading)], 1), 0)])
        return smooth_polyline(verts, 3.0, closed=False)
    else:
        raise InputError(f"unknown trajectory {kind!r} (choose {', '.join(TRAJECTORY_KINDS)})")
    return PlanarPath(base.points * (target_length / base.length), closed=True)


# --- poses -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MotionStyle:
    """How a camera moves along a path. Lengths in metres, angles in degrees; wobbles are sums of a
    few sines of random phase (smooth and periodic along closed paths)."""

    height: float = 1.65
    step: float = 1.0              # metres per frame on straight stretches
    turn_slowdown: float = 0.4     # fractional speed drop in the tightest turns
    turn_radius: float = 10.0      # radius at which the slowdown is full
    lateral_wobble: float = 0.15
    height_wobble: float = 0.02
    yaw_wobble: float = 0.4
    pitch_wobble: float = 0.4
    roll_wobble: float = 0.3
    bob_period_frames: float = 0.0  # > 0: a periodic head bob (walking) with this period


DRIVING = MotionStyle()
WALKING = MotionStyle(height=1.6, step=0.15, turn_slowdown=0.3, turn_radius=2.0, lateral_wobble=0.05,
                      height_wobble=0.025, yaw_wobble=1.5, pitch_wobble=1.5, roll_wobble=0.6,
                      bob_period_frames=5.0)


def _wobble(rng: np.random.Generator, x: np.ndarray, period: float, amplitude: float, closed_length: float) -> np.ndarray:
    """Sum of three sines with wavelengths around `period` (in the units of x)."""
    out = np.zeros_like(x)
    for k in range(3):
        wavelength = period * (0.5 + rng.random())
        if closed_length > 0:  # whole number of waves around a closed path
            wavelength = closed_length / max(1, round(closed_length / wavelength))
        out += np.sin(2 * np.pi * x / wavelength + rng.random() * 2 * np.pi) / 3
    return amplitude * out


def frame_arclengths(path: PlanarPath, n_frames: int, style: MotionStyle) -> np.ndarray:
    """Arc length (n_frames,) of each frame: uniform in time with a speed that drops in turns.

    Closed paths are covered exactly once (frame n would coincide with frame 0); open paths move
    `style.step` per frame on straights and are cut where the frames run out."""
    s_dense = np.arange(0, path.length, 0.25)
    kappa = path.curvature(s_dense)
    speed = 1 - style.turn_slowdown * np.clip(kappa * style.turn_radius, 0, 1)
    # Smooth the speed over ~10 m (driving) so that braking is gradual.
    width = max(int(4 * style.step / 0.25), 1)
    kernel = np.hanning(2 * width + 1)
    kernel /= kernel.sum()
    pad = np.concatenate([speed[-width:], speed, speed[:width]]) if path.closed else np.pad(speed, width, mode="edge")
    speed = np.convolve(pad, kernel, mode="valid")
    # time(s) = ∫ ds / v(s)
    time = np.concatenate([[0.0], np.cumsum(0.25 / speed[:-1])])
    if path.closed:
        total = time[-1] + 0.25 / speed[-1]
        t_frames = np.arange(n_frames) * total / n_frames
        return np.interp(t_frames, np.append(time, total), np.append(s_dense, path.length))
    t_frames = np.arange(n_frames) * style.step
    if t_frames[-1] > time[-1]:
        raise InputError(f"path of {path.length:.0f} m is too short for {n_frames} frames")
    return np.interp(t_frames, time, s_dense)


def look_rotation(forward: np.ndarray, yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """Camera-to-world rotations (N, 3, 3), OpenCV axes, for horizontal directions forward (N, 2)
    turned by yaw (left positive), pitch (up positive), roll (radians, clockwise as seen by the camera)."""
    heading = np.arctan2(forward[:, 1], forward[:, 0]) + yaw
    ch, sh, cp, sp = np.cos(heading), np.sin(heading), np.cos(pitch), np.sin(pitch)
    f = np.stack([ch * cp, sh * cp, sp], axis=1)
    r0 = np.stack([sh, -ch, np.zeros_like(ch)], axis=1)          # right, horizontal
    d0 = np.cross(f, r0)                                          # down: z × x = y in camera axes
    cr, sr = np.cos(roll)[:, None], np.sin(roll)[:, None]
    r = cr * r0 + sr * d0
    d = -sr * r0 + cr * d0
    return np.stack([r, d, f], axis=2)


def camera_poses(path: PlanarPath, n_frames: int, style: MotionStyle, rng: np.random.Generator) -> np.ndarray:
    """c2w (n_frames, 4, 4) float64 in the internal z-up world, OpenCV camera axes."""
    if n_frames < 1:
        raise InputError(f"need at least one frame, got {n_frames}")
    s = frame_arclengths(path, n_frames, style)
    pos, tangent = path.at(s)
    closed_len = path.length if path.closed else 0.0
    right = np.stack([tangent[:, 1], -tangent[:, 0]], axis=1)
    pos = pos + right * _wobble(rng, s, 60 * style.step, style.lateral_wobble, closed_len)[:, None]
    z = style.height + _wobble(rng, s, 20 * style.step, style.height_wobble, closed_len)
    # Wavelengths of tens of frames: slow sway, not jitter.
    yaw = np.radians(_wobble(rng, s, 30 * style.step, style.yaw_wobble, closed_len))
    pitch = np.radians(_wobble(rng, s, 20 * style.step, style.pitch_wobble, closed_len))
    roll = np.radians(_wobble(rng, s, 30 * style.step, style.roll_wobble, closed_len))
    if style.bob_period_frames > 0:
        phase = 2 * np.pi * np.arange(n_frames) / style.bob_period_frames
        z = z + 0.5 * style.height_wobble * np.sin(phase)
        roll = roll + np.radians(0.5 * style.roll_wobble) * np.sin(phase / 2)
    c2w = np.tile(np.eye(4), (n_frames, 1, 1))
    c2w[:, :3, :3] = look_rotation(tangent, yaw, pitch, roll)
    c2w[:, :2, 3] = pos
    c2w[:, 2, 3] = z
    return c2w
