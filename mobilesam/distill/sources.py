"""Where distillation images come from: a folder, or SA-1B tar shards read in place.

`list_images(source)` returns one small, picklable `ImageRef` per image. A ref knows
where its bytes are (a file, or an offset and length inside a tar) and reads them
only when asked, so a training run can sample from many 10-GB SA-1B shards without
unpacking them or holding them in memory, and DataLoader workers can share the list.

SA-1B annotations (`sa_N.json` beside `sa_N.jpg`, in the tar or in a folder) come
with `ref.annotations()`: the list of {"segmentation": COCO RLE, "bbox", ...}.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ImageLoadError, MobileSAMError
from ..image_io import IMAGE_SUFFIXES, open_image, rgb_image, visible_files


@dataclass(frozen=True)
class Member:
    """Bytes of one file: a whole file on disk, or `size` bytes at `offset` in a tar."""

    path: Path
    offset: int | None = None
    size: int | None = None

    def read(self) -> bytes:
        with open(self.path, "rb") as f:
            if self.offset is None:
                return f.read()
            f.seek(self.offset)
            return f.read(self.size)


@dataclass(frozen=True)
class ImageRef:
    id: str
    image: Member
    annotation: Member | None = None
    error: str | None = None  # what reading it will say: the unreadable rest of a tar shard

    def load(self) -> np.ndarray:
        """HxWx3 uint8 RGB; ImageLoadError if the bytes are not a readable image."""
        return np.asarray(self.open())

    def open(self) -> Image.Image:
        """The decoded image, upright, in RGB mode (`load` without the copy to an array)."""
        if self.error:
            raise ImageLoadError(self.error)
        source = self.image.path if self.image.offset is None else io.BytesIO(self.image.read())
        return rgb_image(open_image(source, self.id))

    def annotations(self) -> list[dict]:
        """SA-1B masks of this image (an empty list without a .json beside it)."""
        if self.annotation is None:
            return []
        try:
            return json.loads(self.annotation.read())["annotations"]
        except (OSError, ValueError, KeyError) as exc:
            raise ImageLoadError(f"{self.id}: unreadable SA-1B annotation file: {exc}") from exc


def list_images(source: str | Path) -> list[ImageRef]:
    """Every image of a folder, of one SA-1B .tar, or of the .tar files in a folder; none
    is a `MobileSAMError` (there is nothing to cache, train on or evaluate)."""
    refs = _listed(Path(source))
    if not refs:
        raise MobileSAMError(f"no images in {source} (a folder of images or SA-1B .tar shards, or one .tar)")
    return refs


def _listed(source: Path) -> list[ImageRef]:
    if source.suffix == ".tar" and source.is_file():
        return _tar_images(source)
    if not source.is_dir():
        raise MobileSAMError(f"not a folder of images or a .tar shard: {source}")
    tars = sorted(source.glob("*.tar"))
    if tars:
        return [ref for tar in tars for ref in _tar_images(tar)]
    files = visible_files(source)
    jsons = {p.stem: p for p in files if p.suffix.lower() == ".json"}
    return [
        ImageRef(p.name, Member(p), Member(jsons[p.stem]) if p.stem in jsons else None)
        for p in files
        if p.suffix.lower() != ".json"  # anything else is meant as an image; bad ones get reported
    ]


def _tar_images(path: Path) -> list[ImageRef]:
    """Scan the tar's headers once (seeking past the data) and remember where files are.
    A shard that cannot be read to its end (a download cut short) keeps the images before
    the damage, and one more ref, `SHARD/...`, that fails with the reason: a job reports it
    and goes on with the other shards."""
    images, jsons, error = [], {}, None
    try:
        with tarfile.open(path, "r:") as tar:  # uncompressed: members are read at their offsets
            for m in tar:
                if not m.isfile():
                    continue
                member = Member(path, m.offset_data, m.size)
                stem, _, suffix = m.name.rpartition(".")
                if m.name.lower().endswith(IMAGE_SUFFIXES):
                    images.append((m.name, stem, member))
                elif suffix.lower() == "json":
                    jsons[stem] = member
    except (tarfile.TarError, OSError) as exc:
        last = f" after {images[-1][0]}" if images else ""
        error = f"cannot read tar shard {path}{last}: {exc}"
    refs = [ImageRef(f"{path.name}/{name}", member, jsons.get(stem)) for name, stem, member in images]
    if error:
        refs.append(ImageRef(f"{path.name}/...", Member(path), error=error))
    return refs
