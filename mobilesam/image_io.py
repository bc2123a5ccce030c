"""Load any image a user hands us as an HxWx3 uint8 RGB array.

Sources: a path, an http(s) URL, the bytes of an image file or a binary file object (an
upload, `open(path, "rb")`), a numpy array (a torch tensor taken as one) or a PIL image.
EXIF orientation is applied; grayscale, palette, CMYK and 16-bit images are converted to
8-bit RGB; an alpha channel is dropped (the colour under it is kept). Any format Pillow
reads, and HEIC/HEIF (phones' photos) with the optional pillow-heif (`mobilesam[heif]`).
"""

from __future__ import annotations

import functools
import io
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from os import PathLike
from pathlib import Path
from typing import BinaryIO

import numpy as np
import PIL
from PIL import Image, ImageOps, UnidentifiedImageError, features

from .errors import ImageLoadError, PromptError

ImageSource = str | PathLike | bytes | BinaryIO | np.ndarray | Image.Image
# What folder listings take (the folder job takes every file, and reports what is no image).
IMAGE_SUFFIXES = (
    ".jpg",
    ".jpeg",
    ".jpe",
    ".jfif",
    ".png",
    ".bmp",
    ".tif",
    ".tiff",
    ".webp",
    ".avif",
    ".heic",
    ".heif",
)

_URL_TIMEOUT_S = 30
_MAX_DOWNLOAD_BYTES = 1 << 30  # an image by URL is read into memory: a larger one, from a path
_MAX_PIXELS = 30_000 * 30_000
_ORIENTATION = 0x0112  # the EXIF tag
# The major brands of an ISO media file's "ftyp" box (bytes 8-12) for HEVC-coded HEIF
# (an iPhone's .heic) and for AVIF, which Pillow reads itself from version 11.3.
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}


def is_url(source: object) -> bool:
    return isinstance(source, str) and source.startswith(("http://", "https://"))


def load_image(source: ImageSource) -> np.ndarray:
    """Any supported source -> HxWx3 uint8 RGB (C-contiguous)."""
    if isinstance(source, np.ndarray):
        return array_to_rgb(source)
    if type(source).__module__ == "torch" and callable(getattr(source, "numpy", None)):  # a Tensor
        return array_to_rgb(source.detach().cpu().numpy())  # as an array: HxWx3, any device
    if isinstance(source, Image.Image):
        return pil_to_rgb(source)
    if is_url(source):
        return pil_to_rgb(open_image(_fetch(source), source))
    if isinstance(source, (str, PathLike)):
        path = Path(source)
        if not path.is_file():
            dangling = f" (a symlink to {path.readlink()}, which does not exist)" if path.is_symlink() else ""
            raise ImageLoadError(f"image not found: {path}{dangling}")
        return pil_to_rgb(open_image(path, str(path)))
    if isinstance(source, (bytes, bytearray, memoryview)):
        return pil_to_rgb(open_image(io.BytesIO(source), "image bytes"))
    if callable(getattr(source, "read", None)):
        name = str(getattr(source, "name", "image file object"))
        data = None if isinstance(source, io.TextIOBase) else source.read()
        if not isinstance(data, (bytes, bytearray)):
            raise ImageLoadError(f"{name}: a file object must be opened in binary mode ('rb')")
        return pil_to_rgb(open_image(io.BytesIO(data), name))
    raise ImageLoadError(
        f"unsupported image type {type(source).__name__}: pass a path, URL, bytes, binary file object, "
        "numpy array, torch tensor or PIL image"
    )


def _fetch(url: str) -> io.BytesIO:
    too_big = ImageLoadError(
        f"image {url} is over {_MAX_DOWNLOAD_BYTES >> 20} MB: download it and pass its path"
    )
    try:
        with urllib.request.urlopen(url, timeout=_URL_TIMEOUT_S) as response:
            if int(response.headers.get("Content-Length") or 0) > _MAX_DOWNLOAD_BYTES:
                raise too_big  # said before anything is read
            data = response.read(_MAX_DOWNLOAD_BYTES + 1)
    except (urllib.error.URLError, OSError) as exc:
        raise ImageLoadError(f"cannot download image {url}: {exc}") from exc
    if len(data) > _MAX_DOWNLOAD_BYTES:  # no length given, or a wrong one
        raise too_big
    return io.BytesIO(data)


def open_image(fp: Path | io.BytesIO, name: str) -> Image.Image:
    """Open and decode now, so a truncated or non-image file fails here, naming `name`."""
    try:
        img = _pil_open(fp, name)
        if img.width * img.height > _MAX_PIXELS:
            raise ImageLoadError(f"{name}: {img.width}x{img.height} is too large to segment")
        img.load()
        return img
    except ImageLoadError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageLoadError(f"{name} is not an image file Pillow can read") from exc
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(
            f"{name}: {exc} Pillow refuses it as a safety limit: if the file is trusted, raise "
            "PIL.Image.MAX_IMAGE_PIXELS (half the pixels allowed), or pass the image as an array"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageLoadError(f"{name} is corrupt or unreadable: {exc}") from exc


def _pil_open(fp: Path | io.BytesIO, name: str) -> Image.Image:
    """`Image.open(fp)`; a HEIF file Pillow does not know is opened with pillow-heif's
    plugin, registered then (ImageLoadError naming the extra where it is not installed)."""
    try:
        return Image.open(fp)
    except UnidentifiedImageError:
        brand = _ftyp_brand(fp)
        if brand in _HEIF_BRANDS:
            if not _heif_plugin():
                raise ImageLoadError(
                    f"{name} is a HEIC/HEIF image: reading it needs pillow-heif; install it with: "
                    "pip install 'mobilesam[heif]'"
                ) from None
            if isinstance(fp, io.BytesIO):
                fp.seek(0)
            return Image.open(fp)
        if brand in _AVIF_BRANDS and not features.check_module("avif"):
            raise ImageLoadError(
                f"{name} is an AVIF image, which Pillow {PIL.__version__} cannot read: "
                "Pillow 11.3 or newer reads it (pip install -U pillow)"
            ) from None
        raise


def _ftyp_brand(fp: Path | io.BytesIO) -> bytes | None:
    """The major brand of an ISO media file (HEIF, AVIF, MP4), else None."""
    if isinstance(fp, io.BytesIO):
        head = fp.getvalue()[:12]
    else:
        with open(fp, "rb") as f:
            head = f.read(12)
    return head[8:12] if head[4:8] == b"ftyp" else None


@functools.cache
def _heif_plugin() -> bool:
    """pillow-heif's opener registered with Pillow (once per process); False if not installed."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


@contextmanager
def opened_image(path: Path) -> Iterator[Image.Image]:
    """`Image.open(path)` for reading only what is needed (a header, a draft-scale
    thumbnail); anything Pillow raises in the block becomes an ImageLoadError naming `path`."""
    try:
        with _pil_open(path, str(path)) as img:
            yield img
    except ImageLoadError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageLoadError(f"{path} is not an image file Pillow can read ({exc})") from exc


def upright_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image file as `load_image` returns it (EXIF rotations by 90 degrees
    swap the stored sides), from its header; ImageLoadError if it is not a readable image."""
    with opened_image(path) as img:
        w, h = img.size
        turned = img.getexif().get(_ORIENTATION, 1) in (5, 6, 7, 8)
    return (w, h) if turned else (h, w)


def to_uint8(arr: np.ndarray, name: str = "image") -> np.ndarray:
    """Pixel values of any numeric type -> uint8, by one rule for files and arrays alike:
    - uint8 as is; bool as 0/255;
    - integers: values up to 255 are taken as 8-bit; larger ones are scaled from the
      smallest bit depth that holds the maximum (10, 12, 14 or 16 bits: 4095 -> 255);
    - floats: [0, 1] is scaled by 255, [0, 255] is taken as is; anything else (negative,
      above 255, NaN) is refused, since its range cannot be known.
    """
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.integer):
        low, high = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        if low < 0:
            raise ImageLoadError(f"{name}: negative pixel values ({low}) in {arr.dtype} data")
        top = next((t for t in (255, 1023, 4095, 16383, 65535) if high <= t), None)
        if top is None:
            raise ImageLoadError(f"{name}: pixel values up to {high} exceed 16 bits")
        return arr.astype(np.uint8) if top == 255 else np.round(arr * (255.0 / top)).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        low, high = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high > 255:
            raise ImageLoadError(
                f"{name}: float pixels must lie in [0, 1] or [0, 255], got {low:g} to {high:g}; "
                "scale them to one of those ranges first"
            )
        scale = 255.0 if high <= 1.0 else 1.0
        return np.clip(np.round(arr.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    raise ImageLoadError(f"{name}: unsupported pixel type {arr.dtype}")


def pil_to_rgb(img: Image.Image) -> np.ndarray:
    return np.asarray(rgb_image(img))


def rgb_image(img: Image.Image) -> Image.Image:
    """The same image upright (EXIF orientation applied) in 8-bit RGB mode: `img` itself
    when it already is, so that only what must change is copied."""
    if img.getexif().get(_ORIENTATION, 1) != 1:
        img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # PIL's own convert("RGB") would clip 16-bit data at 255 and floats in [0, 1] to 0.
        gray = to_uint8(np.asarray(img), getattr(img, "filename", "") or "image")
        return Image.fromarray(gray).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img if img.mode == "RGB" else img.convert("RGB")


def array_to_rgb(arr: np.ndarray) -> np.ndarray:
    """HxW, HxWx1, HxWx3 or HxWx4 array of any pixel type (`to_uint8`'s rule) -> HxWx3 uint8 RGB."""
    arr = to_uint8(np.asarray(arr), "image array")
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        hint = ""
        if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[2] > 4:
            hint = " (channels first, as torch keeps them: move them last, e.g. .transpose(1, 2, 0))"
        raise ImageLoadError(f"image array must be HxW, HxWx3 or HxWx4, got shape {arr.shape}{hint}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageLoadError(f"image array is empty: shape {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr[..., :3])


def rgb_array(image: np.ndarray, image_format: str = "RGB") -> np.ndarray:
    """SamPredictor.set_image's input checked: HxWx3 uint8 in "RGB" or "BGR" -> RGB, contiguous."""
    if image_format not in ("RGB", "BGR"):
        raise PromptError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ImageLoadError(
            f"image must be an HxWx3 uint8 array, got shape {image.shape} dtype {image.dtype}"
        )
    if image.size == 0:
        raise ImageLoadError(f"image is empty: shape {image.shape}")
    return np.ascontiguousarray(image[..., ::-1] if image_format == "BGR" else image)


def shrink(rgb: np.ndarray, percent: float) -> np.ndarray:
    """Resize an HxWx3 image to `percent` % of its size (bilinear); 100 returns it as is."""
    if percent >= 100:
        return rgb
    h, w = rgb.shape[:2]
    size = (max(1, round(w * percent / 100)), max(1, round(h * percent / 100)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR))


def visible_files(folder: Path, recursive: bool = False) -> list[Path]:
    """Every visible regular file of a folder, sorted by path; a symlink whose target is
    missing is listed too, so that a job reports it instead of passing over it. recursive:
    those of every visible subfolder too (a symlinked folder is not entered: no cycles)."""
    files = [
        p
        for p in Path(folder).iterdir()
        if (p.is_file() or (p.is_symlink() and not p.exists())) and not p.name.startswith(".")
    ]
    if recursive:
        for sub in Path(folder).iterdir():
            if sub.is_dir() and not sub.is_symlink() and not sub.name.startswith("."):
                files += visible_files(sub, recursive=True)
    return sorted(files)


def source_name(image: object) -> str | None:
    """The file name of a path, URL or opened file, for exports; None for bytes, arrays and images."""
    if not isinstance(image, (str, PathLike)):
        image = getattr(image, "name", None) if callable(getattr(image, "read", None)) else None
    return Path(image).name if isinstance(image, (str, PathLike)) else None
