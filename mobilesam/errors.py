"""Exceptions with messages meant for the person running the tool."""

from __future__ import annotations


class MobileSAMError(Exception):
    """Base class: the CLI prints these as one-line errors instead of tracebacks."""


class CheckpointError(MobileSAMError):
    """A checkpoint file is missing, unreadable, unsafe or for another model."""


class WeightsUnavailableError(MobileSAMError, ValueError):
    """Published weights are not cached and cannot be downloaded."""


class ImageLoadError(MobileSAMError, ValueError):
    """An image file, URL or array cannot be used as an RGB image."""


class PromptError(MobileSAMError, ValueError):
    """A prompt or parameter is malformed or out of range; the message names the argument."""


class NoImageError(MobileSAMError, RuntimeError):
    """A predictor was asked for masks or an embedding before an image was set."""


class ConvertError(MobileSAMError, ValueError):
    """A label file is not one `mobilesam convert` can read (the message names the place)."""


class OutputError(MobileSAMError):
    """An output path cannot be written (read-only, a file where a folder is wanted, disk full)."""


def missing_extra(package: str, extra: str) -> MobileSAMError:
    return MobileSAMError(f"{package} is needed for this; install it with: pip install 'mobilesam[{extra}]'")
