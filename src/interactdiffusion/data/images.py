"""Reading images robustly: anything PIL opens becomes RGB; anything it cannot is reported, not fatal."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from .records import ImageRecord

log = logging.getLogger(__name__)


class ImageLoadError(OSError):
    """An image that is missing or cannot be decoded."""


def load_rgb(path: str | Path):
    """Open and fully decode an image as RGB (grayscale, palette, CMYK, alpha are converted)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB") if image.mode != "RGB" else image.copy()
    except FileNotFoundError:
        raise ImageLoadError(f"image not found: {path}") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        raise ImageLoadError(f"cannot read image {path}: {err}") from None


def split_missing(records: Sequence[ImageRecord], image_dir: str | Path) -> tuple[list[ImageRecord], list[str]]:
    """Records whose image file exists, and the file names of those that do not."""
    folder = os.fspath(image_dir)
    present, missing = [], []
    for record in records:
        (present if os.path.isfile(os.path.join(folder, record.file_name)) else missing).append(record)
    return present, [r.file_name for r in missing]
