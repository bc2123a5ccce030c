"""Published checkpoints: one record each, and a verified, cached download.

Files live in `$MOBILESAM_HOME` (default `~/.cache/mobilesam`, or under
`$XDG_CACHE_HOME`). A download goes to a temporary file beside the target, is checked
for size and SHA-256, then renamed into place, so a partial or tampered file is never
used. `MOBILESAM_OFFLINE=1` never touches the network. `MOBILESAM_WEIGHTS_MIRROR=URL`
tries `URL/<filename>` before the published addresses (an internal mirror, or the
local server the tests run).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .errors import WeightsUnavailableError
from .transforms import PIXEL_MEAN, PIXEL_STD
from .utils.files import atomic_write

_CHUNK = 1 << 20
_TIMEOUT_S = 30


@dataclass(frozen=True)
class Weights:
    """One published checkpoint."""

    model_type: str
    filename: str
    urls: tuple[str, ...]
    sha256: str
    size: int
    licence: str
    description: str
    input_size: int = 1024
    pixel_mean: tuple[float, float, float] = PIXEL_MEAN
    pixel_std: tuple[float, float, float] = PIXEL_STD


_FAIR = "https://dl.fbaipublicfiles.com/segment_anything/"

WEIGHTS: dict[str, Weights] = {
    w.model_type: w
    for w in (
        Weights(
            "vit_t",
            "mobile_sam.pt",
            (
                "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
                "https://huggingface.co/dhkim2810/MobileSAM/resolve/main/mobile_sam.pt",
            ),
            "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
            40_728_226,
            "Apache-2.0",
            "MobileSAM: TinyViT-5M encoder distilled from SAM ViT-H",
        ),
        Weights(
            "vit_b",
            "sam_vit_b_01ec64.pth",
            (_FAIR + "sam_vit_b_01ec64.pth",),
            "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
            375_042_383,
            "Apache-2.0",
            "SAM ViT-B (91M encoder)",
        ),
        Weights(
            "vit_l",
            "sam_vit_l_0b3195.pth",
            (_FAIR + "sam_vit_l_0b3195.pth",),
            "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
            1_249_524_607,
            "Apache-2.0",
            "SAM ViT-L (308M encoder)",
        ),
        Weights(
            "vit_h",
            "sam_vit_h_4b8939.pth",
            (_FAIR + "sam_vit_h_4b8939.pth",),
            "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
            2_564_550_879,
            "Apache-2.0",
            "SAM ViT-H (632M encoder), MobileSAM's teacher",
        ),
    )
}


def get_weights(model_type: str) -> Weights:
    key = "vit_h" if model_type == "default" else model_type  # as the registry
    if key not in WEIGHTS:
        raise WeightsUnavailableError(
            f"no published weights for {model_type!r} (published: {sorted(WEIGHTS)}); "
            "pass a checkpoint, e.g. one trained with `mobilesam distill train`"
        )
    return WEIGHTS[key]


def cache_dir() -> Path:
    if home := os.environ.get("MOBILESAM_HOME"):
        return Path(home).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mobilesam"


def cached_path(model_type: str) -> Path:
    """Where the checkpoint is (or would be) cached."""
    return cache_dir() / get_weights(model_type).filename


def offline() -> bool:
    return os.environ.get("MOBILESAM_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def sha256_of(*paths: Path) -> str:
    """SHA-256 of the files' bytes, one after the other."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, record: Weights) -> str | None:
    """None if `path` is the published file, else what is wrong with it."""
    size = path.stat().st_size
    if size != record.size:
        return f"size {size:,} bytes, expected {record.size:,}"
    digest = sha256_of(path)
    if digest != record.sha256:
        return f"SHA-256 {digest}, expected {record.sha256}"
    return None


def candidate_urls(record: Weights) -> list[str]:
    urls = list(record.urls)
    if mirror := os.environ.get("MOBILESAM_WEIGHTS_MIRROR"):
        urls.insert(0, mirror.rstrip("/") + "/" + record.filename)
    return urls


def ensure_weights(model_type: str = "vit_t", progress: bool = True) -> Path:
    """Path of the verified published checkpoint, downloading it once if needed."""
    record = get_weights(model_type)
    target = cached_path(model_type)
    if target.is_file():
        problem = verify(target, record)
        if problem is None:
            return target
        if offline():
            raise WeightsUnavailableError(
                f"cached {target} is damaged ({problem}) and MOBILESAM_OFFLINE is set.\n"
                + _manual_instructions(record, target)
            )
        print(f"mobilesam: cached {target.name} is damaged ({problem}); downloading again", file=sys.stderr)
    if offline():
        raise WeightsUnavailableError(
            f"{record.filename} is not cached and MOBILESAM_OFFLINE is set.\n"
            + _manual_instructions(record, target)
        )
    errors = []
    for url in candidate_urls(record):
        try:
            _download(url, target, record, progress)
            return target
        except (OSError, http.client.HTTPException, ValueError) as exc:
            errors.append(f"  {url}: {exc}")
    raise WeightsUnavailableError(
        f"could not download {record.filename}:\n"
        + "\n".join(errors)
        + "\n"
        + _manual_instructions(record, target)
    )


def _manual_instructions(record: Weights, target: Path) -> str:
    return (
        f"Download it yourself from {record.urls[0]}\n"
        f"(SHA-256 {record.sha256}, {record.size:,} bytes) and put it at {target},\n"
        "or pass the file's path with checkpoint=PATH (CLI: --checkpoint PATH)."
    )


def _download(url: str, target: Path, record: Weights, progress: bool) -> None:
    # atomic_write removes the temporary file on any error (a bad hash, Ctrl-C), so a
    # partial or tampered download is never renamed into place.
    with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
        atomic_write(target, lambda out: _copy_verified(response, out, record, progress))


def _copy_verified(src: BinaryIO, dst: BinaryIO, record: Weights, progress: bool) -> None:
    """Copy with a progress bar, checking size and SHA-256 on the way."""
    done, digest = 0, hashlib.sha256()
    show = progress and sys.stderr.isatty()
    while chunk := src.read(_CHUNK):
        dst.write(chunk)
        digest.update(chunk)
        done += len(chunk)
        if done > record.size:
            raise ValueError(f"server sent more than the expected {record.size:,} bytes")
        if show:
            pct = 100 * done / record.size
            bar = "#" * int(pct // 4)
            print(
                f"\r{record.filename} [{bar:<25}] {pct:5.1f}% {done / 1e6:7.1f} MB", end="", file=sys.stderr
            )
    if show:
        print(file=sys.stderr)
    if done != record.size:
        raise ValueError(f"download interrupted: got {done:,} of {record.size:,} bytes")
    if digest.hexdigest() != record.sha256:
        raise ValueError(f"downloaded file rejected: SHA-256 {digest.hexdigest()}, expected {record.sha256}")
