"""Transforms, prompt parsing and image loading: the pure pieces in front of the model."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from mobilesam import ImageLoadError, PromptError
from mobilesam.image_io import load_image
from mobilesam.prompts import parse_boxes, parse_float, parse_int, parse_labels, parse_points, parse_prompts
from mobilesam.transforms import ResizeLongestSide, get_preprocess_shape

# --- transforms ------------------------------------------------------------------


def test_preprocess_shape_rounds_half_up():
    assert get_preprocess_shape(1200, 1800, 1024) == (683, 1024)
    assert get_preprocess_shape(770, 769, 1024) == (1024, 1023)
    assert get_preprocess_shape(10, 10, 1024) == (1024, 1024)
    assert get_preprocess_shape(1, 5000, 1024) == (1, 1024)  # not 0: a resize needs 1 pixel
    assert get_preprocess_shape(5000, 1, 1024) == (1024, 1)


def test_coords_and_boxes_numpy_and_torch_agree():
    t = ResizeLongestSide(1024)
    coords = np.array([[0.0, 0.0], [1800.0, 1200.0], [450.5, 300.25]])
    out = t.apply_coords(coords, (1200, 1800))
    np.testing.assert_allclose(out[1], [1024, 683])
    assert coords[1, 0] == 1800.0  # input untouched
    boxes = np.array([[425, 600, 700, 875]])
    np.testing.assert_allclose(
        t.apply_boxes(boxes, (1200, 1800)),
        t.apply_coords(boxes.reshape(-1, 2, 2), (1200, 1800)).reshape(-1, 4),
    )
    torch.testing.assert_close(
        t.apply_boxes_torch(torch.tensor(boxes), (1200, 1800)),
        torch.tensor(t.apply_boxes(boxes, (1200, 1800)), dtype=torch.float),
    )
    torch.testing.assert_close(
        t.apply_coords_torch(torch.tensor(coords), (1200, 1800)), torch.tensor(out, dtype=torch.float)
    )


def test_apply_image_shapes():
    t = ResizeLongestSide(1024)
    img = np.zeros((1200, 1800, 3), dtype=np.uint8)
    assert t.apply_image(img).shape == (683, 1024, 3)
    assert t.apply_image_torch(torch.zeros(1, 3, 1200, 1800)).shape == (1, 3, 683, 1024)


# --- prompts ---------------------------------------------------------------------

SIZE = (1200, 1800)  # H, W


def test_boxes_from_strings_and_values():
    ikomia = "[[425, 600, 700, 875], [1240, 675, 1400, 750]]"
    np.testing.assert_array_equal(parse_boxes(ikomia, SIZE), [[425, 600, 700, 875], [1240, 675, 1400, 750]])
    np.testing.assert_array_equal(parse_boxes([425, 600, 700, 875], SIZE), [[425, 600, 700, 875]])
    np.testing.assert_array_equal(parse_boxes("425, 600, 700, 875", SIZE), [[425, 600, 700, 875]])
    np.testing.assert_array_equal(parse_boxes(np.array([[1, 2, 3, 4]]), SIZE), [[1, 2, 3, 4]])
    for empty in ([], "[]", np.zeros((0, 4))):
        assert parse_boxes(empty, SIZE).shape == (0, 4)


def test_box_partly_outside_is_clipped():
    np.testing.assert_array_equal(parse_boxes([-10, 1100, 1900, 1300], SIZE), [[0, 1100, 1800, 1200]])


@pytest.mark.parametrize(
    "value,match",
    [
        ([700, 600, 425, 875], "x1 < x0"),
        ([1, 2, 3], "shape"),
        ([[]], "shape"),
        (np.zeros((0, 3)), "shape"),
        ("[[1, 2, 3, 4], [1, 2]]", "numbers"),
        ([0, 0, float("nan"), 5], "NaN"),
        ([0, 0, float("inf"), 5], "infinite"),
        ([2000, 1300, 2100, 1400], "entirely outside"),
        ("not a box", "not a list"),
        ("", "empty"),
    ],
)
def test_bad_boxes(value, match):
    with pytest.raises(PromptError, match=match) as err:
        parse_boxes(value, SIZE)
    assert "input_box" in str(err.value)


def test_points_and_labels():
    np.testing.assert_array_equal(parse_points("[[500, 375], [1125, 625]]", SIZE), [[500, 375], [1125, 625]])
    np.testing.assert_array_equal(parse_points([500, 375], SIZE), [[500, 375]])
    np.testing.assert_array_equal(parse_labels(None, 2), [1, 1])
    np.testing.assert_array_equal(parse_labels("[1, 0]", 2), [1, 0])
    with pytest.raises(PromptError, match=r"input_point .*outside"):
        parse_points([[1801, 10]], SIZE)
    with pytest.raises(PromptError, match="input_point_label must be 0"):
        parse_labels([1, 2], 2)
    with pytest.raises(PromptError, match="2 labels for 1 points"):
        parse_labels([1, 0], 1)
    with pytest.raises(PromptError, match="without input_point"):
        parse_prompts(SIZE, input_point_label=[1])


def test_numbers():
    assert parse_int("16", "points_per_side", 1) == 16
    assert parse_int(2.0, "mask_id", 1, 3) == 2
    assert parse_float("50", "input_size_percent", 1, 100) == 50.0
    for bad in ("4", 0, "x", 1.5):
        with pytest.raises(PromptError, match="mask_id"):
            parse_int(bad, "mask_id", 1, 3)
    for bad in (0, 101, "abc", 0.5):
        with pytest.raises(PromptError, match="input_size_percent"):
            parse_float(bad, "input_size_percent", 1, 100)


# --- images ----------------------------------------------------------------------


def _save(img: Image.Image, path, fmt="PNG", **kw):
    img.save(path, fmt, **kw)
    return path


def test_modes_convert_to_rgb(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    base = Image.fromarray(rgb)
    for mode in ("L", "P", "RGBA", "CMYK", "LA"):
        fmt = "JPEG" if mode == "CMYK" else "PNG"
        path = _save(base.convert(mode), tmp_path / f"{mode}.{fmt.lower()}", fmt)
        out = load_image(path)
        assert out.shape == (20, 30, 3) and out.dtype == np.uint8, mode
    np.testing.assert_array_equal(load_image(_save(base.convert("RGBA"), tmp_path / "a.png")), rgb)


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 32896, 65535]], dtype=np.uint16)
    path = _save(Image.fromarray(arr), tmp_path / "g16.png")
    out = load_image(path)
    np.testing.assert_array_equal(out[0, :, 0], [0, 128, 255])
    np.testing.assert_array_equal(load_image(arr)[0, :, 0], [0, 128, 255])


def test_pixel_ranges_one_rule_for_files_and_arrays(tmp_path):
    """0-255 data in uint16 or float is not darkened; [0, 1] floats are scaled up; 12-bit
    data is scaled from 4095; ranges that cannot be known are refused. Files (16-bit PNG,
    float TIFF) and arrays give the same pixels."""
    values = np.array([[0, 64, 255]], dtype=np.uint8)
    cases = {
        "uint16 0-255": values.astype(np.uint16),
        "float 0-255": values.astype(np.float32),
        "float 0-1": values.astype(np.float32) / 255,
        "12-bit": np.array([[0, 1028, 4095]], dtype=np.uint16),
    }
    for name, arr in cases.items():
        np.testing.assert_array_equal(load_image(arr)[0, :, 0], [0, 64, 255], err_msg=name)
    tiff = _save(Image.fromarray(cases["float 0-1"][0:1].astype(np.float32)), tmp_path / "f.tif", "TIFF")
    np.testing.assert_array_equal(load_image(tiff)[0, :, 0], [0, 64, 255])
    png16 = _save(Image.fromarray(cases["uint16 0-255"]), tmp_path / "low16.png")
    np.testing.assert_array_equal(load_image(png16)[0, :, 0], [0, 64, 255])
    for bad, match in (
        (np.array([[-1.0, 0.5]]), r"\[0, 1\] or \[0, 255\]"),
        (np.array([[0.0, 300.0]]), r"\[0, 1\] or \[0, 255\]"),
        (np.array([[np.nan, 1.0]]), r"\[0, 1\] or \[0, 255\]"),
        (np.array([[-5, 10]], dtype=np.int32), "negative"),
    ):
        with pytest.raises(ImageLoadError, match=match):
            load_image(bad)


def test_exif_orientation_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rot.jpg"
    img.save(path, "JPEG", exif=exif.tobytes())
    assert load_image(path).shape == (40, 20, 3)


def test_corrupt_and_non_image_files(tmp_path):
    good = io.BytesIO()
    Image.new("RGB", (64, 64)).save(good, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(good.getvalue()[:200])
    (tmp_path / "notes.jpg").write_text("hello")
    with pytest.raises(ImageLoadError, match=r"cut\.jpg"):
        load_image(tmp_path / "cut.jpg")
    with pytest.raises(ImageLoadError, match="not an image file"):
        load_image(tmp_path / "notes.jpg")
    with pytest.raises(ImageLoadError, match="not found"):
        load_image(tmp_path / "missing.png")


def test_arrays():
    assert load_image(np.zeros((5, 6), np.uint8)).shape == (5, 6, 3)
    assert load_image(np.zeros((5, 6, 4), np.uint8)).shape == (5, 6, 3)
    assert load_image(Image.new("L", (6, 5))).shape == (5, 6, 3)
    with pytest.raises(ImageLoadError, match="shape"):
        load_image(np.zeros((5, 6, 2), np.uint8))
    with pytest.raises(ImageLoadError, match="unsupported image type"):
        load_image(42)
    # A torch tensor is taken as an array (a robot's camera frame); channels first is
    # refused with the way to put them last.
    frame = torch.randint(0, 256, (5, 6, 3), dtype=torch.uint8)
    assert np.array_equal(load_image(frame), frame.numpy())
    assert np.array_equal(load_image(frame.float().requires_grad_()), frame.numpy())
    with pytest.raises(ImageLoadError, match=r"got shape \(3, 5, 6\) \(channels first"):
        load_image(frame.permute(2, 0, 1))


def test_image_bytes_and_file_objects(tmp_path):
    """An upload's bytes or an opened file decode as the path does (EXIF applied); a
    text-mode file, corrupt bytes and empty bytes are ImageLoadErrors."""
    from mobilesam.image_io import source_name

    path = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), np.uint8)).save(path, exif=exif)
    expected = load_image(path)
    assert expected.shape == (30, 20, 3)
    data = path.read_bytes()
    for source in (data, bytearray(data), memoryview(data), io.BytesIO(data)):
        np.testing.assert_array_equal(load_image(source), expected)
    with open(path, "rb") as f:
        np.testing.assert_array_equal(load_image(f), expected)
        assert source_name(f) == "turned.jpg"
    assert source_name(data) is None and source_name(io.BytesIO(data)) is None
    with open(path) as f, pytest.raises(ImageLoadError, match="binary mode"):
        load_image(f)
    with pytest.raises(ImageLoadError, match="image bytes is corrupt"):
        load_image(data[:300])
    with pytest.raises(ImageLoadError, match="image bytes is not an image"):
        load_image(b"")


def test_pillows_size_limit_is_named_not_called_corruption(monkeypatch, tmp_path):
    """An image over Pillow's decompression-bomb limit (179 MP by default; here lowered)
    is refused with what to do about it, not reported as a corrupt file; reading only its
    header (the UI's sizes) is an ImageLoadError too, not an unhandled exception."""
    from mobilesam.image_io import upright_size

    buf = io.BytesIO()
    Image.new("RGB", (100, 50)).save(buf, "PNG")
    (tmp_path / "big.png").write_bytes(buf.getvalue())
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageLoadError, match="MAX_IMAGE_PIXELS") as err:
        load_image(buf.getvalue())
    assert "corrupt" not in str(err.value)
    with pytest.raises(ImageLoadError, match=r"big\.png"):
        upright_size(tmp_path / "big.png")


def test_image_from_url(tmp_path, monkeypatch):
    import functools
    import http.server
    import threading

    Image.new("RGB", (32, 24), (10, 200, 30)).save(tmp_path / "x.png")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        img = load_image(f"{base}/x.png")
        assert img.shape == (24, 32, 3) and tuple(img[0, 0]) == (10, 200, 30)
        with pytest.raises(ImageLoadError, match="cannot download"):
            load_image(f"{base}/missing.png")
        # An image too big to read into memory is said, not downloaded whole (the server
        # sends its length), nor read past the limit (a length the server does not send)
        from mobilesam import image_io

        size = (tmp_path / "x.png").stat().st_size
        monkeypatch.setattr(image_io, "_MAX_DOWNLOAD_BYTES", size - 1)
        with pytest.raises(ImageLoadError, match=r"over 0 MB: download it and pass its path"):
            load_image(f"{base}/x.png")
        plain = http.server.BaseHTTPRequestHandler.send_header  # the length no longer sent
        monkeypatch.setattr(
            http.server.SimpleHTTPRequestHandler,
            "send_header",
            lambda self, k, v: None if k == "Content-Length" else plain(self, k, v),
        )
        with pytest.raises(ImageLoadError, match="download it and pass its path"):
            load_image(f"{base}/x.png")
        monkeypatch.setattr(image_io, "_MAX_DOWNLOAD_BYTES", size)
        assert load_image(f"{base}/x.png").shape == (24, 32, 3)
    finally:
        httpd.shutdown()
        httpd.server_close()


def _heif(img: Image.Image, path, **kw):
    """A HEIC file written by pillow-heif itself, not through Pillow: loading it is what
    registers the plugin with Pillow (a test run alone checks that path)."""
    import pillow_heif

    pillow_heif.from_pillow(img).save(path, **kw)
    return path


def test_phone_and_web_formats(tmp_path):
    """HEIC (an iPhone's photos, through pillow-heif) and AVIF load upright as 8-bit RGB,
    from a path or bytes, and the folder listings take them; a HEIC rotation is applied
    once, with `upright_size` (the UI's sizes, from the header) agreeing; a 10-bit HEIC
    (an iPhone's HDR photo) is scaled to 8 bits, not clipped."""
    from pathlib import Path

    from mobilesam.image_io import IMAGE_SUFFIXES, upright_size

    pillow_heif = pytest.importorskip("pillow_heif")
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[:, :30] = (200, 30, 30)  # left half red, right half black
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: 40 wide, 60 high, the red on top
    heic = tmp_path / "phone.heic"
    _heif(Image.fromarray(rgb), heic, exif=exif.tobytes(), quality=95)
    for source in (heic, str(heic), heic.read_bytes()):
        out = load_image(source)
        assert out.shape == (60, 40, 3) and out.dtype == np.uint8
        assert out[:25, :, 0].mean() > 180 and out[35:, :, 0].mean() < 20  # red on top: turned once
    assert upright_size(heic) == (60, 40)
    deep = np.repeat(np.arange(0, 1024, 16, dtype=np.uint16)[None, :60, None], 40, axis=0).repeat(3, axis=2)
    pillow_heif.from_bytes(mode="RGB;16", size=(60, 40), data=(deep * 64).tobytes()).save(
        tmp_path / "hdr.heic", quality=-1
    )
    assert np.abs(load_image(tmp_path / "hdr.heic").astype(int) - (deep >> 2)).max() <= 2
    avif = _save(Image.fromarray(rgb), tmp_path / "web.avif", "AVIF", quality=95)
    assert np.abs(load_image(avif).astype(int) - rgb).mean() < 8
    assert {".heic", ".heif", ".avif", ".jfif"} <= set(IMAGE_SUFFIXES)
    assert Path("x.HEIC").suffix.lower() in IMAGE_SUFFIXES


def test_heic_without_pillow_heif_names_the_extra(tmp_path):
    """Without pillow-heif a HEIC photo is an ImageLoadError saying what to install (not
    "not an image"); in a fresh process, where no earlier test registered the plugin."""
    import subprocess
    import sys

    pytest.importorskip("pillow_heif")
    heic = _heif(Image.new("RGB", (16, 16), (1, 2, 3)), tmp_path / "p.heic")
    code = (
        "import sys; sys.modules['pillow_heif'] = None\n"
        "from mobilesam.image_io import load_image\n"
        f"for source in ({str(heic)!r}, open({str(heic)!r}, 'rb').read()):\n"
        "    try: load_image(source)\n"
        "    except Exception as exc: print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert out.count("ImageLoadError") == 2 and out.count("pip install 'mobilesam[heif]'") == 2, out
    assert "p.heic is a HEIC/HEIF image" in out and "image bytes is a HEIC/HEIF image" in out


def test_avif_on_an_old_pillow_and_huge_images_are_named(monkeypatch, tmp_path):
    """An AVIF file where Pillow lacks AVIF (before 11.3) says to upgrade Pillow; an image
    over our own pixel limit (with Pillow's raised) says so, not that it is corrupt."""
    from PIL import features

    from mobilesam import image_io

    avif = b"\x00\x00\x00\x20ftypavif" + bytes(100)
    monkeypatch.setattr(features, "check_module", lambda name: name != "avif")
    with pytest.raises(ImageLoadError, match=r"AVIF image, which Pillow .* cannot read: Pillow 11\.3"):
        load_image(avif)
    monkeypatch.undo()
    with pytest.raises(ImageLoadError, match="image bytes is not an image") as err:
        load_image(avif)  # Pillow reads AVIF: this one is broken, not unsupported
    assert "11.3" not in str(err.value)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    monkeypatch.setattr(image_io, "_MAX_PIXELS", 99)
    with pytest.raises(ImageLoadError, match="10x10 is too large to segment") as err:
        load_image(_save(Image.new("RGB", (10, 10)), tmp_path / "big.png"))
    assert "corrupt" not in str(err.value)
