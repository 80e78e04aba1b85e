"""Frame input: the kinds of INPUT, the release's preprocessing, bad input, and streaming."""

from __future__ import annotations

import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from conftest import require_parity
import torch
from PIL import Image

from scal3r.data import frames as frames_mod
from scal3r.data.frames import (
    FrameOptions,
    InputWarning,
    fps_indices,
    frames_from_tensor,
    list_images,
    load_frames,
    natural_key,
    open_frames,
    read_frames,
)
from scal3r.data.preprocess import PreprocessOptions, plan_transform, target_size
from scal3r.data.video import probe_video
from scal3r.io.video import write_video
from scal3r.errors import InputError

try:
    import av
except ImportError:  # videos need PyAV; everything else runs without it
    av = None
needs_av = pytest.mark.skipif(av is None, reason="PyAV (pip install av) is needed for videos")



# --- helpers -------------------------------------------------------------------------------------

def smooth_image(h: int, w: int, seed: int) -> np.ndarray:
    """uint8 (h, w, 3): gradients, a few blobs and noise, so resampling has structure to get wrong."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([x / max(w - 1, 1), y / max(h - 1, 1), 0.5 + 0.5 * np.sin(x / 5.0 + y / 7.0 + seed)], -1)
    for _ in range(3):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(3, max(h, w) / 3)
        img += rng.uniform(-0.5, 0.5, 3) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / r**2)[..., None]
    img += rng.normal(0, 0.03, img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def write_png(path: Path, rgb: np.ndarray) -> Path:
    Image.fromarray(rgb).save(path)
    return path


def release_preprocess(rgbs, proc_max_size, align=14, center_crop=True):
    """The release's load_and_preprocess_images re-stated for decoded uint8 frames (the test oracle).

    Float path as released: u8/255 in float32; target from the first frame; resize to cover with
    PIL bicubic on (x*255).astype(uint8); crop at round(cy) - th//2 of the scaled dummy camera.
    Returns [(float32 (3, h, w), float32 (3, 3) intrinsics)].
    """
    first = rgbs[0]
    H, W = first.shape[:2]
    if proc_max_size > 0:
        th, tw = int(H / W * proc_max_size), proc_max_size
    else:
        th, tw = H, W
    th, tw = max(align, th // align * align), max(align, tw // align * align)
    out = []
    for rgb in rgbs:
        img = torch.from_numpy(rgb.copy()) / 255
        h, w = img.shape[:2]
        f = float(max(h, w))
        ixt = torch.tensor([[f, 0.0, w / 2.0], [0.0, f, h / 2.0], [0.0, 0.0, 1.0]], dtype=torch.float32)
        ratio = max(th / max(h, 1), tw / max(w, 1))
        rh = max(align, round(h * ratio / align) * align)
        rw = max(align, round(w * ratio / align) * align)
        if rh != h or rw != w:
            ixt[0:1] *= rw / w
            ixt[1:2] *= rh / h
            u8 = (img.numpy() * 255.0).astype(np.uint8)
            img = torch.from_numpy(np.array(Image.fromarray(u8).resize((rw, rh), Image.Resampling.BICUBIC), copy=True))
            img = img.contiguous().to(torch.float32).div(255.0)
        if center_crop:
            sh = int(round(ixt[1, 2].item())) - th // 2
            sw = int(round(ixt[0, 2].item())) - tw // 2
        else:
            sh = sw = 0
        # Out of bounds (only with an odd align) the release zero-pads before slicing.
        pt, pl = max(0, -sh), max(0, -sw)
        pb, pr = max(0, sh + th - img.shape[0]), max(0, sw + tw - img.shape[1])
        img = torch.nn.functional.pad(img, (0, 0, pl, pr, pt, pb), value=0.0)
        img = img[sh + pt:sh + pt + th, sw + pl:sw + pl + tw]
        ixt[0, 2] -= sw
        ixt[1, 2] -= sh
        out.append((img.permute(2, 0, 1).contiguous(), ixt))
    return out


def decode_video_rgb(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]


# --- ordering and input kinds ----------------------------------------------------------------------

def test_natural_sort():
    names = ["frame10.png", "frame2.png", "Frame1.png", "frame_001.png", "frame_01.png", "a.png", "frame2b.png"]
    assert sorted(names, key=natural_key) == [
        "a.png", "Frame1.png", "frame2.png", "frame2b.png", "frame10.png", "frame_001.png", "frame_01.png"]


def test_folder_lists_images_in_natural_order(tmp_path):
    img = smooth_image(28, 42, 0)
    for name in ["frame10.png", "frame2.PNG", "frame1.jpg", "frame3.jpeg", "frame4.bmp", ".hidden.png"]:
        write_png(tmp_path / name, img)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "sub").mkdir()
    write_png(tmp_path / "sub" / "frame0.png", img)
    names = [p.name for p in list_images(tmp_path)]
    assert names == ["frame1.jpg", "frame2.PNG", "frame3.jpeg", "frame4.bmp", "frame10.png"]
    src = open_frames(tmp_path, FrameOptions(resolution=42))
    assert src.kind == "folder" and len(src) == 5 and src.size == (28, 42)
    got = list(src)
    assert [f.name for f in got] == names and [f.index for f in got] == list(range(5))
    assert got[0].image.dtype == torch.float32 and got[0].image.shape == (3, 28, 42)


def test_list_file_relative_paths_stride_and_max(tmp_path):
    (tmp_path / "imgs").mkdir()
    rgbs = [smooth_image(28, 42, i) for i in range(6)]
    for i, rgb in enumerate(rgbs):
        write_png(tmp_path / "imgs" / f"{i}.png", rgb)
    lst = tmp_path / "frames.txt"
    lst.write_text("# a comment\n\n" + "\n".join(f"imgs/{i}.png" for i in (5, 0, 3, 1, 2, 4)) + "\n")
    src = open_frames(lst, FrameOptions(resolution=42))
    assert src.kind == "list" and len(src) == 6
    stack = read_frames(src)
    assert stack.names == ["5.png", "0.png", "3.png", "1.png", "2.png", "4.png"]  # list order, not sorted
    assert np.array_equal(stack.rgb8[0].permute(1, 2, 0).numpy(), rgbs[5])  # identity size: pixels unchanged
    thin = load_frames(lst, FrameOptions(resolution=42, stride=2, max_frames=2))
    assert thin.names == ["5.png", "3.png"] and thin.source_indices == [0, 2]


def test_grey_alpha_palette_and_16bit_images_become_rgb(tmp_path):
    from scal3r.data.frames import decode_image

    rgb = smooth_image(28, 42, 0)
    grey = rgb[..., 0]
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    Image.fromarray(np.dstack([rgb, np.full((28, 42), 7, np.uint8)]), "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "pal.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "deep.png")  # 16-bit grey
    assert np.array_equal(decode_image(tmp_path / "grey.png"), np.repeat(grey[..., None], 3, 2))
    assert np.array_equal(decode_image(tmp_path / "rgba.png"), rgb)  # alpha dropped, not blended
    assert decode_image(tmp_path / "pal.png").shape == (28, 42, 3)
    assert np.array_equal(decode_image(tmp_path / "deep.png"), np.repeat(grey[..., None], 3, 2))


# --- the release's preprocessing ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tiny_conv", "tiny_dinov2"])
def test_parity_fixture_round_trip(tmp_path, name):
    """The fixture's `images` are what the OFFICIAL loader produced from these PNGs: match bit for bit."""
    path = require_parity(name) / "inputs.pt"
    images = torch.load(path, weights_only=True)["images"]
    n, _, h, w = images.shape
    for i in range(n):
        u8 = (images[i] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        write_png(tmp_path / f"{i:06d}.png", u8)
    stack = load_frames(tmp_path, FrameOptions(resolution=w))
    assert stack.size == (h, w)
    assert torch.equal(stack.images(), images)


@pytest.mark.parametrize(
    "hw, resolution, center_crop, align",
    [
        ((61, 97), 84, True, 14),     # downscale, crop rows
        ((100, 150), 518, True, 14),  # upscale
        ((300, 200), 518, True, 14),  # portrait, round(55.5) half-to-even
        ((375, 1242), 518, True, 14),  # KITTI aspect
        ((61, 97), 84, False, 14),    # top-left crop
        ((61, 97), 0, True, 14),      # native size, floored to /14 (still resizes to cover)
        ((61, 97), 35, True, 7),      # odd align: round(17.5) overshoots, the release zero-pads
    ],
)
def test_matches_release_rule(tmp_path, hw, resolution, center_crop, align):
    rgbs = [smooth_image(*hw, seed) for seed in range(2)]
    for i, rgb in enumerate(rgbs):
        write_png(tmp_path / f"{i}.png", rgb)
    opts = FrameOptions(resolution=resolution, center_crop=center_crop, align=align)
    got = list(open_frames(tmp_path, opts))
    want = release_preprocess(rgbs, resolution, align=align, center_crop=center_crop)
    for frame, (img, ixt) in zip(got, want):
        assert frame.image.shape == img.shape
        assert torch.equal(frame.image, img)
        # The dummy camera of the release, pushed through our transform, lands on the same intrinsics.
        h, w = hw
        k = torch.tensor([[max(h, w), 0.0, w / 2.0], [0.0, max(h, w), h / 2.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
        assert torch.allclose(frame.transform.intrinsics_to_output(k).float(), ixt, rtol=1e-6, atol=1e-4)
        assert torch.allclose(frame.transform.intrinsics_to_input(frame.transform.intrinsics_to_output(k)), k)


def test_release_sizes_for_common_videos():
    # 1920x1080 -> 518 wide: 291 rows floored to 280; cover-resize to 518x294, then 7 rows cut on top.
    assert target_size(1080, 1920) == (280, 518)
    t = plan_transform((1080, 1920), (280, 518))
    assert t.resized_hw == (294, 518) and t.crop_tl == (7, 0)
    assert target_size(56, 84, PreprocessOptions(resolution=84)) == (56, 84)  # 56/84*84 stays 56
    assert target_size(480, 640) == (378, 518)
    for h in range(20, 400, 7):  # any first-frame size gives sides that are multiples of 14
        th, tw = target_size(h, 333)
        assert th % 14 == 0 and tw == 518


def test_mixed_sizes_are_resized_like_the_release(tmp_path):
    rgbs = [smooth_image(100, 150, 0), smooth_image(120, 160, 1), smooth_image(100, 150, 2)]
    for i, rgb in enumerate(rgbs):
        write_png(tmp_path / f"{i}.png", rgb)
    with pytest.warns(InputWarning, match="160x120 but the first frame is 150x100"):
        stack = load_frames(tmp_path, FrameOptions(resolution=84))
    want = release_preprocess(rgbs, 84)
    assert torch.equal(stack.images(), torch.stack([img for img, _ in want]))


def test_tensor_frames_equal_png_frames(tmp_path):
    rgbs = np.stack([smooth_image(61, 97, s) for s in range(3)])
    for i, rgb in enumerate(rgbs):
        write_png(tmp_path / f"{i}.png", rgb)
    from_png = load_frames(tmp_path, FrameOptions(resolution=84)).images()
    nhwc = read_frames(frames_from_tensor(rgbs, FrameOptions(resolution=84))).images()
    nchw_float = torch.from_numpy(rgbs).permute(0, 3, 1, 2).float() / 255
    from_float = read_frames(frames_from_tensor(nchw_float, FrameOptions(resolution=84))).images()
    assert torch.equal(from_png, nhwc) and torch.equal(from_png, from_float)


# --- videos -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def video_rgbs():
    return [smooth_image(64, 96, s) for s in range(12)]


@pytest.fixture(scope="module")
def mp4(tmp_path_factory, video_rgbs):
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    assert write_video(path, iter(video_rgbs), fps=10) == 12
    return path


@needs_av
def test_video_frames_match_release_rule_on_decoded_frames(mp4):
    src = open_frames(mp4, FrameOptions(resolution=84))
    assert src.kind == "video" and len(src) == 12 and src.input_size == (64, 96) and src.size == (56, 84)
    stack = read_frames(src)
    want = release_preprocess(decode_video_rgb(mp4), 84)
    assert torch.equal(stack.images(), torch.stack([img for img, _ in want]))
    assert stack.source_indices == list(range(12))
    assert stack.times == pytest.approx([i / 10 for i in range(12)])


@needs_av
def test_video_fps_stride_and_max_frames(mp4):
    assert fps_indices(12, Fraction(10), 4.0) == [0, 3, 5, 8, 10]  # nearest frame to k / 4 s
    assert fps_indices(12, Fraction(10), 25.0) == list(range(12))
    assert fps_indices(300, Fraction(30000, 1001), 10.0)[-1] <= 299
    src = open_frames(mp4, FrameOptions(resolution=84, fps=4))
    assert src.selected == [0, 3, 5, 8, 10]
    assert [f.source_index for f in src] == [0, 3, 5, 8, 10]
    assert open_frames(mp4, FrameOptions(resolution=84, fps=4, stride=2)).selected == [0, 5, 10]
    assert len(open_frames(mp4, FrameOptions(resolution=84, max_frames=4))) == 4
    assert open_frames(mp4, FrameOptions(resolution=84, stride=5)).selected == [0, 5, 10]


@needs_av
def test_mkv_without_frame_count_is_counted_by_scanning(tmp_path, video_rgbs):
    path = tmp_path / "clip.mkv"
    write_video(path, video_rgbs[:7], fps=5, codec="mpeg4")
    with av.open(str(path)) as c:
        assert c.streams.video[0].frames == 0  # the container does not say
    assert probe_video(path).frames == 7
    assert len(read_frames(open_frames(path, FrameOptions(resolution=84)))) == 7


@needs_av
def test_video_display_rotation_is_applied(tmp_path):
    """Phones store portrait video landscape plus a display matrix; frames come out upright."""
    path = tmp_path / "portrait.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 96, 64, "yuv420p"
        if not hasattr(s, "set_display_rotation"):
            pytest.skip("this PyAV cannot write a display matrix")
        s.set_display_rotation(90)  # counter-clockwise, as VideoFrame.rotation reads it
        for seed in range(3):
            for p in s.encode(av.VideoFrame.from_ndarray(smooth_image(64, 96, seed), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    info = probe_video(path)
    assert info.rotation == 90 and (info.height, info.width) == (96, 64)
    src = open_frames(path, FrameOptions(resolution=56))
    assert src.input_size == (96, 64)
    upright = [np.rot90(f, k=1) for f in decode_video_rgb(path)]  # k=1: counter-clockwise
    want = release_preprocess(upright, 56)
    assert torch.equal(read_frames(src).images(), torch.stack([img for img, _ in want]))


# --- streaming ---------------------------------------------------------------------------------------

def test_folder_is_streamed_one_frame_at_a_time(tmp_path, monkeypatch):
    for i in range(30):
        write_png(tmp_path / f"f{i}.png", smooth_image(28, 42, i))
    decoded = []
    real = frames_mod.decode_image
    monkeypatch.setattr(frames_mod, "decode_image", lambda p: decoded.append(p) or real(p))
    src = open_frames(tmp_path, FrameOptions(resolution=42))
    assert len(src) == 30 and decoded == []  # opening reads headers only
    it = iter(src)
    for k in range(1, 6):
        next(it)
        assert len(decoded) == k  # each frame is decoded when asked for, not before
    it.close()
    calls = []
    stack = read_frames(open_frames(tmp_path, FrameOptions(resolution=42)), progress=lambda *a: calls.append(a))
    assert len(decoded) == 5 + 30  # one decode per frame
    assert stack.rgb8.dtype == torch.uint8 and stack.rgb8.shape == (30, 3, 28, 42)
    assert calls[-1] == ("decode", 30, 30) and len(calls) == 30
    assert torch.equal(stack.take([5, 2]), torch.stack([stack.images(5, 6)[0], stack.images(2, 3)[0]]))


@needs_av
def test_video_converts_only_kept_frames(mp4, monkeypatch):
    converted = []
    real = frames_mod._video_frame_rgb
    monkeypatch.setattr(frames_mod, "_video_frame_rgb", lambda f: converted.append(f.pts) or real(f))
    src = open_frames(mp4, FrameOptions(resolution=84, stride=4))
    assert converted == []
    it = iter(src)
    next(it)
    assert len(converted) == 1
    assert [f.source_index for f in it] == [4, 8] and len(converted) == 3


# --- bad input ---------------------------------------------------------------------------------------

def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg and msg
    return msg


def test_missing_path(tmp_path):
    with pytest.raises(InputError, match="no such file") as e:
        open_frames(tmp_path / "nope")
    _one_line(e)


def test_empty_folder_and_folder_without_images(tmp_path):
    with pytest.raises(InputError, match="no images") as e:
        open_frames(tmp_path)
    _one_line(e)
    (tmp_path / "readme.md").write_text("x")
    with pytest.raises(InputError, match="no images"):
        open_frames(tmp_path)


def test_no_decodable_frames(tmp_path):
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(b"not an image at all")
    with pytest.raises(InputError, match="no decodable frames") as e:
        open_frames(tmp_path)
    _one_line(e)


def test_corrupt_image_is_skipped_or_refused(tmp_path):
    rgbs = [smooth_image(28, 42, i) for i in range(4)]
    for i, rgb in enumerate(rgbs):
        write_png(tmp_path / f"{i}.png", rgb)
    (tmp_path / "1.png").write_bytes(b"garbage")  # no header
    full = (tmp_path / "2.png").read_bytes()
    (tmp_path / "2.png").write_bytes(full[: len(full) // 2])  # header fine, data truncated
    with pytest.warns(InputWarning) as record:
        stack = load_frames(tmp_path, FrameOptions(resolution=42))
    assert stack.names == ["0.png", "3.png"] and len(stack.skipped) == 2
    assert any("1.png" in str(w.message) for w in record)
    assert any("skipped 2 of 4" in str(w.message) for w in record)
    with pytest.raises(InputError, match="1.png.*strict") as e:
        load_frames(tmp_path, FrameOptions(resolution=42, strict=True))
    _one_line(e)


def test_corrupt_first_image_does_not_decide_the_size(tmp_path):
    (tmp_path / "0.png").write_bytes(b"garbage")
    for i in (1, 2):
        write_png(tmp_path / f"{i}.png", smooth_image(28, 42, i))
    with pytest.warns(InputWarning, match="0.png"):
        stack = load_frames(tmp_path, FrameOptions(resolution=42))
    assert stack.names == ["1.png", "2.png"] and stack.size == (28, 42)


def test_fewer_than_two_frames(tmp_path):
    write_png(tmp_path / "0.png", smooth_image(28, 42, 0))
    with pytest.raises(InputError, match="at least 2") as e:
        open_frames(tmp_path)
    _one_line(e)
    with pytest.raises(InputError, match="single image"):
        open_frames(tmp_path / "0.png")
    write_png(tmp_path / "1.png", smooth_image(28, 42, 1))
    with pytest.raises(InputError, match="at least 2"):
        open_frames(tmp_path, FrameOptions(max_frames=1))
    with pytest.raises(InputError, match="at least 2"):
        open_frames(tmp_path, FrameOptions(stride=2))
    (tmp_path / "1.png").write_bytes(b"garbage")  # two planned, one decodable
    with pytest.warns(InputWarning), pytest.raises(InputError, match="only 1 of 2"):
        load_frames(tmp_path, FrameOptions(resolution=42))


def test_bad_list_file(tmp_path):
    write_png(tmp_path / "a.png", smooth_image(28, 42, 0))
    lst = tmp_path / "l.txt"
    lst.write_text("a.png\nmissing.png\n")
    with pytest.raises(InputError, match=r"l.txt:2: no such image file 'missing.png'") as e:
        open_frames(lst)
    _one_line(e)
    lst.write_text("# nothing\n\n")
    with pytest.raises(InputError, match="names no images"):
        open_frames(lst)


@needs_av
def test_video_pyav_cannot_open(tmp_path):
    for name in ("garbage.mp4", "empty.mkv"):
        (tmp_path / name).write_bytes(b"\x00\x01garbage" * 100 if name == "garbage.mp4" else b"")
        with pytest.raises(InputError, match="cannot open video") as e:
            open_frames(tmp_path / name)
        _one_line(e)
    (tmp_path / "thing.xyz").write_bytes(b"garbage" * 100)
    with pytest.raises(InputError, match="not an image folder, an image list") as e:
        open_frames(tmp_path / "thing.xyz")
    _one_line(e)


@needs_av
def test_video_with_one_frame(tmp_path, video_rgbs):
    write_video(tmp_path / "one.mp4", video_rgbs[:1], fps=10)
    with pytest.raises(InputError, match="at least 2"):
        open_frames(tmp_path / "one.mp4")


@needs_av
def test_truncated_video_is_warned_or_refused(tmp_path, mp4):
    data = mp4.read_bytes()  # faststart: the index comes first, so the cut file still opens
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])
    src = open_frames(cut, FrameOptions(resolution=84))
    assert len(src) == 12
    with pytest.warns(InputWarning) as record:
        stack = read_frames(src)
    assert "ends after" in str(record[0].message) and "skipped" in str(record[-1].message)
    assert 2 <= len(stack) < 12 and stack.source_indices == list(range(len(stack)))
    with pytest.raises(InputError, match="ends after.*strict") as e:
        load_frames(cut, FrameOptions(resolution=84, strict=True))
    _one_line(e)


@needs_av
def test_broken_video_frames_are_skipped_or_refused(tmp_path, video_rgbs):
    path = tmp_path / "clip.avi"
    write_video(path, video_rgbs, fps=10, codec="mjpeg")  # intra-only: damage stays local
    with av.open(str(path)) as c:
        packets = [(p.pos, p.size) for p in c.demux(c.streams.video[0]) if p.size]
    data = bytearray(path.read_bytes())
    for idx in (4, 7):  # zero two whole JPEG packets: the decoder refuses them
        pos, size = packets[idx]
        data[pos:pos + size] = bytes(size)
    bad = tmp_path / "bad.avi"
    bad.write_bytes(bytes(data))
    with pytest.warns(InputWarning) as record:
        stack = load_frames(bad, FrameOptions(resolution=84))
    assert "frame 4 (undecodable" in str(record[0].message) and "skipped 2 of 12" in str(record[-1].message)
    # The lost frames keep their numbers: the others are still named by their place in the video.
    assert stack.source_indices == [0, 1, 2, 3, 5, 6, 8, 9, 10, 11] and len(stack.skipped) == 2
    with pytest.raises(InputError, match="undecodable.*strict"):
        load_frames(bad, FrameOptions(resolution=84, strict=True))


def test_bad_options(tmp_path):
    with pytest.raises(InputError, match="stride"):
        FrameOptions(stride=0)
    with pytest.raises(InputError, match="fps"):
        FrameOptions(fps=float("nan"))
    with pytest.raises(InputError, match="below the patch size"):
        FrameOptions(resolution=10)
    for i in range(2):
        write_png(tmp_path / f"{i}.png", smooth_image(28, 42, i))
    with pytest.raises(InputError, match="fps applies to videos only"):
        open_frames(tmp_path, FrameOptions(fps=5))


@pytest.mark.parametrize(
    "frames, match",
    [
        (torch.full((3, 3, 28, 42), float("nan")), "NaN or infinite"),
        (torch.cat([torch.zeros(2, 3, 28, 42), torch.full((1, 3, 28, 42), float("inf"))]), "frame 2 contains NaN or infinite"),
        (torch.zeros(3, 28, 42), r"\(N, 3, H, W\) or \(N, H, W, 3\)"),
        (torch.zeros(3, 4, 28, 42), r"must be \(3, H, W\) or \(H, W, 3\)"),
        (torch.zeros(3, 3, 28, 42, dtype=torch.int32), "dtype int32"),
        (torch.full((3, 3, 28, 42), 2.0), r"float frames must lie in \[0, 1\]"),
        (torch.zeros(1, 3, 28, 42), "at least 2"),
        ([np.zeros((28, 42, 3), np.uint8), np.zeros((0, 42, 3), np.uint8)], "empty"),
    ],
)
def test_frames_from_tensor_rejects_bad_arrays(frames, match):
    with pytest.raises(InputError, match=match) as e:
        frames_from_tensor(frames)
    _one_line(e)


def test_warnings_do_not_fire_for_clean_input(tmp_path):
    for i in range(3):
        write_png(tmp_path / f"{i}.png", smooth_image(28, 42, i))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_frames(tmp_path, FrameOptions(resolution=42))) == 3
