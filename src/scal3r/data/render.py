"""Headless OpenGL rendering of the synthetic worlds: RGB and metric depth in one pass.

Uses moderngl with an EGL context, which on a machine without a GPU is Mesa's llvmpipe (CPU). One
framebuffer has two colour attachments: RGBA8 colour and R32F depth, where depth is the camera-space
z (metres along the optical axis) interpolated per fragment, so it is exact for the rendered surface
at each pixel centre, and 0 where no surface was hit (sky).

Camera conventions: c2w (4, 4) with OpenCV axes (x right, y down, z forward), K the OpenCV pinhole
matrix (pixel centres at integer coordinates). The projection maps image row v to framebuffer row v,
so the buffers read back top row first, with no flip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

from scal3r.data.mesh import VERTEX_FLOATS, Mesh
from scal3r.data.textures import Layer
from scal3r.errors import MissingDependencyError

EGL_HINT = ("install the EGL/Mesa libraries (Debian/Ubuntu: apt-get install libegl1 libegl-mesa0 "
            "libgl1-mesa-dri) and `pip install moderngl`")

_SCENE_VS = """
#version 330
uniform mat4 u_clip_from_rel;   // camera-relative world position -> clip
uniform vec3 u_cam_pos;
uniform vec3 u_cam_forward;
in vec3 in_pos;
in vec3 in_normal;
in vec2 in_uv;
in float in_layer;
in vec3 in_tint;
out vec3 v_rel;
out vec3 v_world;
out vec3 v_normal;
out vec2 v_uv;
flat out float v_layer;
out vec3 v_tint;
out float v_depth;
void main() {
    vec3 rel = in_pos - u_cam_pos;
    v_rel = rel;
    v_world = in_pos;
    v_normal = in_normal;
    v_uv = in_uv;
    v_layer = in_layer;
    v_tint = in_tint;
    v_depth = dot(rel, u_cam_forward);
    gl_Position = u_clip_from_rel * vec4(rel, 1.0);
}
"""

_SCENE_FS = """
#version 330
uniform sampler2DArray u_tex;
uniform vec3 u_sun_dir;
uniform vec3 u_sun_color;
uniform vec3 u_ambient;
uniform vec3 u_haze_color;
uniform float u_haze_distance;
uniform float u_exposure;
uniform float u_grime_layer;
in vec3 v_rel;
in vec3 v_world;
in vec3 v_normal;
in vec2 v_uv;
flat in float v_layer;
in vec3 v_tint;
in float v_depth;
layout(location = 0) out vec4 out_color;
layout(location = 1) out float out_depth;
void main() {
    vec3 albedo = texture(u_tex, vec3(v_uv, v_layer)).rgb * v_tint;
    // Low-frequency grime in world coordinates breaks the exact repetition of tiled textures.
    vec2 g_uv = vec2(v_world.x * 0.011 + v_world.y * 0.007, v_world.z * 0.023 + v_world.y * 0.009);
    albedo *= 0.78 + 0.44 * texture(u_tex, vec3(g_uv, u_grime_layer)).r;
    vec3 n = faceforward(normalize(v_normal), v_rel, normalize(v_normal));
    float sun = max(dot(n, u_sun_dir), 0.0);
    float sky = 0.55 + 0.45 * n.z;
    // Cheap ambient occlusion: walls darken towards the ground.
    float ao = mix(1.0, mix(0.6, 1.0, clamp(v_world.z / 2.5, 0.0, 1.0)), 1.0 - abs(n.z));
    vec3 color = albedo * (u_sun_color * sun + u_ambient * sky * ao) * u_exposure;
    float haze = 1.0 - exp(-length(v_rel) / u_haze_distance);
    color = mix(color, u_haze_color * u_exposure, haze);
    out_color = vec4(color, 1.0);
    out_depth = v_depth;
}
"""

_SKY_VS = """
#version 330
in vec2 in_xy;
void main() { gl_Position = vec4(in_xy, 0.999999, 1.0); }
"""

_SKY_FS = """
#version 330
uniform sampler2DArray u_tex;
uniform mat3 u_ray_from_pixel;  // world ray direction (unnormalised) of pixel (u, v, 1)
uniform vec3 u_sun_dir;
uniform vec3 u_sun_color;
uniform vec3 u_zenith;
uniform vec3 u_horizon;
uniform vec3 u_haze_color;
uniform float u_exposure;
uniform float u_cloud_layer;
uniform vec2 u_cloud_offset;
layout(location = 0) out vec4 out_color;
layout(location = 1) out float out_depth;
void main() {
    vec2 px = gl_FragCoord.xy - 0.5;
    vec3 dir = normalize(u_ray_from_pixel * vec3(px, 1.0));
    float up = max(dir.z, 0.0);
    vec3 color = mix(u_horizon, u_zenith, pow(up, 0.6));
    if (dir.z > 0.005) {
        vec2 c_uv = dir.xy / dir.z * 0.12 + u_cloud_offset;
        float cloud = texture(u_tex, vec3(c_uv, u_cloud_layer)).r * smoothstep(0.005, 0.15, dir.z);
        color = mix(color, vec3(0.93, 0.93, 0.95), cloud * 0.85);
    }
    float s = max(dot(dir, u_sun_dir), 0.0);
    color += u_sun_color * (0.25 * pow(s, 16.0) + 0.6 * pow(s, 400.0));
    color = mix(u_haze_color, color, smoothstep(-0.02, 0.08, dir.z));
    out_color = vec4(color * u_exposure, 1.0);
    out_depth = 0.0;
}
"""


@dataclass(frozen=True)
class Lighting:
    """Per-frame light. sun_direction: unit (3,) pointing to the sun (world, z up); colours linear
    RGB in [0, 1]-ish; exposure multiplies everything; haze_distance (m): distance at which the
    scene is 63% blended into haze_color."""

    sun_direction: Tuple[float, float, float] = (0.4, -0.3, 0.87)
    sun_color: Tuple[float, float, float] = (0.75, 0.72, 0.65)
    ambient: Tuple[float, float, float] = (0.45, 0.48, 0.55)
    zenith: Tuple[float, float, float] = (0.30, 0.48, 0.78)
    horizon: Tuple[float, float, float] = (0.72, 0.80, 0.90)
    haze_color: Tuple[float, float, float] = (0.72, 0.77, 0.84)
    haze_distance: float = 900.0
    exposure: float = 1.0
    cloud_offset: Tuple[float, float] = (0.0, 0.0)


def create_context():
    """A standalone headless moderngl context (EGL), or MissingDependencyError saying what to install."""
    try:
        import moderngl
    except ImportError:
        raise MissingDependencyError(f"rendering the synthetic world needs moderngl: {EGL_HINT}") from None
    try:
        return moderngl.create_standalone_context(require=330, backend="egl")
    except Exception as e:  # moderngl raises plain Exception when EGL or the driver is missing
        reason = " ".join(str(e).split())  # the CLI shows one line
        raise MissingDependencyError(f"cannot create a headless OpenGL 3.3 context via EGL ({reason}); {EGL_HINT}") from None


def egl_available() -> bool:
    """Whether `create_context` works on this machine (for callers that skip rendering without it)."""
    try:
        create_context().release()
        return True
    except MissingDependencyError:
        return False


def projection_from_intrinsics(K: np.ndarray, width: int, height: int, near: float, far: float) -> np.ndarray:
    """(4, 4) clip-from-camera matrix for OpenCV camera coordinates (x right, y down, z forward).

    Window x = u + 0.5 and window y = v + 0.5 for pixel (u, v), so framebuffer row v is image row v."""
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    p = np.zeros((4, 4))
    p[0, 0] = 2 * fx / width
    p[0, 2] = 2 * (cx + 0.5) / width - 1
    p[1, 1] = 2 * fy / height
    p[1, 2] = 2 * (cy + 0.5) / height - 1
    p[2, 2] = (far + near) / (far - near)
    p[2, 3] = -2 * far * near / (far - near)
    p[3, 2] = 1.0
    return p


class Renderer:
    """Renders one Mesh with a texture array; `render(c2w, K, lighting)` → (rgb, depth)."""

    def __init__(self, mesh: Mesh, textures: np.ndarray, width: int, height: int, near: float = 0.3,
                 far: float = 1000.0):
        self.width, self.height, self.near, self.far = int(width), int(height), float(near), float(far)
        self.mesh = mesh
        self.ctx = create_context()
        ctx = self.ctx
        import moderngl

        self._moderngl = moderngl
        layers, size = textures.shape[0], textures.shape[1]
        # GL's first texture row is v = 0 (bottom); our layers store the top row first.
        tex_data = np.ascontiguousarray(textures[:, ::-1])
        self.texture = ctx.texture_array((size, size, layers), 4, tex_data.tobytes())
        self.texture.build_mipmaps()
        self.texture.filter = (moderngl.LINEAR_MIPMAP_LINEAR, moderngl.LINEAR)
        self.texture.repeat_x = self.texture.repeat_y = True

        self.scene_prog = ctx.program(vertex_shader=_SCENE_VS, fragment_shader=_SCENE_FS)
        self.sky_prog = ctx.program(vertex_shader=_SKY_VS, fragment_shader=_SKY_FS)
        self.scene_prog["u_grime_layer"].value = float(Layer.GRIME)
        self.sky_prog["u_cloud_layer"].value = float(Layer.CLOUDS)
        self.vbo = None
        if mesh.indices.size:
            self.vbo = ctx.buffer(np.ascontiguousarray(mesh.vertices, dtype=np.float32).tobytes())
            self.ibo = ctx.buffer(np.ascontiguousarray(mesh.indices, dtype=np.uint32).tobytes())
            self.vao = ctx.vertex_array(self.scene_prog, [(self.vbo, "3f 3f 2f 1f 3f", "in_pos", "in_normal", "in_uv",
                                                          "in_layer", "in_tint")], index_buffer=self.ibo,
                                        index_element_size=4)
        self.sky_vbo = ctx.buffer(np.array([-1, -1, 3, -1, -1, 3], dtype=np.float32).tobytes())
        self.sky_vao = ctx.vertex_array(self.sky_prog, [(self.sky_vbo, "2f", "in_xy")])

        self.color_rb = ctx.renderbuffer((self.width, self.height), 4)
        self.depth_rb = ctx.renderbuffer((self.width, self.height), 1, dtype="f4")
        self.zbuffer = ctx.depth_renderbuffer((self.width, self.height))
        self.fbo = ctx.framebuffer(color_attachments=[self.color_rb, self.depth_rb], depth_attachment=self.zbuffer)
        assert VERTEX_FLOATS == 12
        tiles = mesh.tiles
        self._tile_ranges = np.array([(t[0], t[1]) for t in tiles], dtype=np.int64).reshape(-1, 2)
        lo = np.array([t[2] for t in tiles]).reshape(-1, 3)
        hi = np.array([t[3] for t in tiles]).reshape(-1, 3)
        # The 8 corners of every tile's bounding box: (T, 8, 3).
        sel = np.array([[i & 1, (i >> 1) & 1, (i >> 2) & 1] for i in range(8)], dtype=bool)
        self._tile_corners = np.where(sel[None], hi[:, None, :], lo[:, None, :])
        self._tile_lo, self._tile_hi = lo, hi

    def visible_ranges(self, clip_from_world: np.ndarray, camera: np.ndarray) -> list:
        """(first index, index count) of the tiles whose boxes may intersect the frustum, nearest
        first (so the depth test rejects hidden fragments before shading them) and the global tile
        (ground planes, behind everything) last."""
        if len(self._tile_ranges) == 0:
            return []
        c = self._tile_corners @ clip_from_world[:3, :3].T + clip_from_world[:3, 3]
        w = self._tile_corners @ clip_from_world[3, :3] + clip_from_world[3, 3]
        outside = ((c[..., 0] > w).all(1) | (c[..., 0] < -w).all(1) | (c[..., 1] > w).all(1) |
                   (c[..., 1] < -w).all(1) | (c[..., 2] > w).all(1) | (c[..., 2] < -w).all(1))
        # Distance from the camera to each box (0 inside it).
        gap = np.maximum(self._tile_lo - camera, 0) + np.maximum(camera - self._tile_hi, 0)
        dist = np.linalg.norm(gap, axis=1)
        if self.mesh.global_tile:
            outside[0] = False
            dist[0] = np.inf
        order = np.argsort(dist[~outside], kind="stable")
        return [(int(f), int(n)) for f, n in self._tile_ranges[~outside][order]]

    def render(self, c2w: np.ndarray, K: np.ndarray, lighting: Lighting) -> Tuple[np.ndarray, np.ndarray]:
        """c2w (4, 4) float64, K (3, 3) → (rgb (H, W, 3) uint8, depth (H, W) float32 metres, 0 = sky)."""
        ctx = self.ctx
        rot, cam = c2w[:3, :3], c2w[:3, 3]
        proj = projection_from_intrinsics(K, self.width, self.height, self.near, self.far)
        view = np.eye(4)
        view[:3, :3] = rot.T
        clip_from_rel = proj @ view
        clip_from_world = clip_from_rel.copy()
        clip_from_world[:, 3] -= clip_from_rel[:, :3] @ cam

        self.fbo.use()
        ctx.viewport = (0, 0, self.width, self.height)
        self.fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        ctx.enable(self._moderngl.DEPTH_TEST)
        ctx.disable(self._moderngl.CULL_FACE)
        self.texture.use(0)

        sp = self.scene_prog
        sp["u_clip_from_rel"].write(clip_from_rel.T.astype(np.float32).tobytes())
        sp["u_cam_pos"].value = tuple(float(x) for x in cam)
        sp["u_cam_forward"].value = tuple(float(x) for x in rot[:, 2])
        sun = np.asarray(lighting.sun_direction, dtype=np.float64)
        sun = tuple(float(x) for x in sun / np.linalg.norm(sun))
        sp["u_sun_dir"].value = sun
        sp["u_sun_color"].value = lighting.sun_color
        sp["u_ambient"].value = lighting.ambient
        sp["u_haze_color"].value = lighting.haze_color
        sp["u_haze_distance"].value = float(lighting.haze_distance)
        sp["u_exposure"].value = float(lighting.exposure)
        if self.vbo is not None:
            for first, count in self.visible_ranges(clip_from_world, cam):
                self.vao.render(self._moderngl.TRIANGLES, vertices=count, first=first)

        # Sky last, at the far plane: the depth test skips the pixels the scene already covers.
        kp = np.linalg.inv(K)
        sky = self.sky_prog
        sky["u_ray_from_pixel"].write((rot @ kp).T.astype(np.float32).tobytes())
        sky["u_sun_dir"].value = sun
        sky["u_sun_color"].value = lighting.sun_color
        sky["u_zenith"].value = lighting.zenith
        sky["u_horizon"].value = lighting.horizon
        sky["u_haze_color"].value = lighting.haze_color
        sky["u_exposure"].value = float(lighting.exposure)
        sky["u_cloud_offset"].value = lighting.cloud_offset
        self.sky_vao.render(self._moderngl.TRIANGLES)

        # Fresh writable arrays each frame: callers keep them (e.g. queued for writing).
        rgb = np.empty((self.height, self.width, 3), np.uint8)
        depth = np.empty((self.height, self.width), np.float32)
        self.fbo.read_into(rgb, components=3, attachment=0, alignment=1)
        self.fbo.read_into(depth, components=1, attachment=1, dtype="f4", alignment=1)
        return rgb, depth

    def close(self) -> None:
        if self.ctx is not None:
            self.ctx.release()
            self.ctx = None

    def __enter__(self) -> "Renderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
