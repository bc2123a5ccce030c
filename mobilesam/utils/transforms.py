"""segment-anything's module path for `ResizeLongestSide` (`from ...utils.transforms import`)."""

from ..transforms import ResizeLongestSide

__all__ = ["ResizeLongestSide"]
