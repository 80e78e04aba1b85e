"""Point clouds as PLY files: a binary little-endian writer and a reader for common variants.

The writer emits `x y z` as float32 and, when colours are given, `red green blue` as uchar: the
layout that MeshLab, CloudCompare, Open3D and COLMAP all read. The reader accepts binary (little or
big endian) and ASCII files whose `vertex` element has scalar properties of any PLY type; extra
properties (normals, confidence, ...) are returned by name. Faces and other elements after the
vertices are ignored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np

from scal3r.errors import InputError

PathLike = Union[str, os.PathLike]

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


@dataclass
class PointCloud:
    """points (N, 3) float32/64; colors (N, 3) uint8 or None; extra: other vertex properties (N,)."""

    points: np.ndarray
    colors: Optional[np.ndarray] = None
    extra: Dict[str, np.ndarray] = field(default_factory=dict)


def write_ply(path: PathLike, points: np.ndarray, colors: Optional[np.ndarray] = None) -> None:
    """Write points (N, 3) (stored as float32) and optional colours (N, 3) uint8 (or floats in [0, 1])
    as a binary little-endian PLY."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise InputError(f"expected points of shape (N, 3), got {points.shape}")
    n = points.shape[0]
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
        colors = np.asarray(colors)
        if colors.shape != (n, 3):
            raise InputError(f"expected colours of shape ({n}, 3), got {colors.shape}")
        if colors.dtype != np.uint8:
            # Floats are taken as [0, 1] intensities; anything else as 0..255 values.
            scale = 255.0 if np.issubdtype(colors.dtype, np.floating) else 1.0
            colors = np.clip(np.rint(colors.astype(np.float64) * scale), 0, 255).astype(np.uint8)
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    record = np.empty(n, dtype=fields)
    record["x"], record["y"], record["z"] = points[:, 0], points[:, 1], points[:, 2]
    if colors is not None:
        record["red"], record["green"], record["blue"] = colors[:, 0], colors[:, 1], colors[:, 2]
    header = ["ply", "format binary_little_endian 1.0", "comment written by scal3r", f"element vertex {n}",
              "property float x", "property float y", "property float z"]
    if colors is not None:
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    header.append("end_header")
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(record.tobytes())


def read_ply(path: PathLike) -> PointCloud:
    """Read the vertices of a PLY file → PointCloud (points float64 (N, 3), colours uint8 or None)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"PLY file not found: {path}")
    with open(path, "rb") as f:
        if f.readline().strip() != b"ply":
            raise InputError(f"{path}: not a PLY file")
        fmt = None
        elements = []  # (name, count, [(prop, dtype) | (prop, None) for list properties])
        while True:
            line = f.readline()
            if not line:
                raise InputError(f"{path}: PLY header has no end_header")
            words = line.decode("ascii", "replace").split()
            if not words or words[0] in ("comment", "obj_info"):
                continue
            if words[0] == "end_header":
                break
            if words[0] == "format":
                fmt = words[1]
            elif words[0] == "element":
                elements.append((words[1], int(words[2]), []))
            elif words[0] == "property":
                if not elements:
                    raise InputError(f"{path}: PLY property before any element")
                if words[1] == "list":
                    elements[-1][2].append((words[-1], None))
                else:
                    if words[1] not in _PLY_TYPES:
                        raise InputError(f"{path}: unknown PLY type {words[1]!r}")
                    elements[-1][2].append((words[2], _PLY_TYPES[words[1]]))
        if fmt not in ("binary_little_endian", "binary_big_endian", "ascii"):
            raise InputError(f"{path}: unsupported PLY format {fmt!r}")
        vertex = None
        for name, count, props in elements:
            if name == "vertex":
                vertex = (count, props)
                break
            # An element before the vertices: skipping it needs fixed-size records.
            if fmt == "ascii" or any(dt is None for _, dt in props):
                raise InputError(f"{path}: PLY element {name!r} before the vertices is not supported")
            f.seek(count * np.dtype([(p, dt) for p, dt in props]).itemsize, os.SEEK_CUR)
        if vertex is None:
            raise InputError(f"{path}: PLY file has no vertex element")
        count, props = vertex
        if any(dt is None for _, dt in props):
            raise InputError(f"{path}: list properties on PLY vertices are not supported")
        if fmt == "ascii":
            table = np.loadtxt(f, dtype=np.float64, max_rows=count, ndmin=2) if count else np.zeros((0, len(props)))
            if table.shape != (count, len(props)):
                raise InputError(f"{path}: PLY vertex data is truncated")
            columns = {p: table[:, i].astype(dt) for i, (p, dt) in enumerate(props)}
        else:
            endian = "<" if fmt == "binary_little_endian" else ">"
            dtype = np.dtype([(p, endian + dt) for p, dt in props])
            data = f.read(count * dtype.itemsize)
            if len(data) < count * dtype.itemsize:
                raise InputError(f"{path}: PLY vertex data is truncated")
            record = np.frombuffer(data, dtype=dtype, count=count)
            columns = {p: record[p].astype(record[p].dtype.newbyteorder("=")) for p, _ in props}
    if not all(k in columns for k in "xyz"):
        raise InputError(f"{path}: PLY vertices have no x/y/z properties")
    points = np.stack([columns.pop(k).astype(np.float64) for k in "xyz"], axis=1)
    colors = None
    names = [("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green", "diffuse_blue")]
    for rgb in names:
        if all(k in columns for k in rgb):
            cols = [columns.pop(k) for k in rgb]
            if np.issubdtype(cols[0].dtype, np.floating):
                colors = np.clip(np.rint(np.stack(cols, axis=1) * 255), 0, 255).astype(np.uint8)
            else:
                colors = np.stack(cols, axis=1).astype(np.uint8)
            break
    return PointCloud(points=points, colors=colors, extra=columns)
