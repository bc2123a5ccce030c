"""Atomic file output: a reader never sees a half-written file."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def default_file_mode() -> int:
    """The mode a plainly created file gets (0o666 less the umask); mkstemp would give 0o600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call `write(f)` on a temporary file beside `path`, then rename it over `path`. A
    folder at `path`, or a file where a folder of its path should be, is an OSError naming
    that place (not the temporary file's rename)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "a folder is there, not a file", str(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise NotADirectoryError(errno.ENOTDIR, "a file is there, not a folder", exc.filename) from None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def check_output_dir(path: str | os.PathLike) -> Path:
    """Create folder `path` if needed and prove it writable, before any compute: a clear
    `OutputError` for a file in the way, a read-only place or a full disk."""
    from ..errors import OutputError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"output folder {path} is a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".mobilesam-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"cannot write to output folder {path}: {exc.strerror or exc}") from exc
    return path


def check_output_file(path: str | os.PathLike) -> Path:
    """Check, before any compute, that file `path` can be written (its folder is created)."""
    from ..errors import OutputError

    path = Path(path)
    if path.is_dir():
        raise OutputError(f"output file {path} is a folder")
    check_output_dir(path.parent)  # "." for a bare file name
    return path


def replace_folder(final: str | os.PathLike, fill: Callable[[Path], None]) -> Path:
    """Make folder `final` whole or not at all: `fill` a partial folder beside it
    (`.NAME.partial`, one left by an interrupted run removed first), then rename it into
    place, replacing the folder there."""
    final = Path(final)
    partial = final.with_name(f".{final.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    fill(partial)
    if final.is_dir():
        shutil.rmtree(final)
    partial.rename(final)
    return final
