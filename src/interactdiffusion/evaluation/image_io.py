"""Reading and writing the images of an evaluation: uint8 tensors, threaded decoding, atomic writes.

The paper's detector and FID/KID saw the official batch inference's files: ``<file_name>.jpg`` saved
by PIL at its default JPEG quality (75) after a truncating ``astype(np.uint8)`` of ``x * 255``
(REFERENCE §3). ``to_uint8`` and ``save_image_atomic`` reproduce that (``quantize="truncate"``,
``image_format="jpg"``) or write lossless rounded PNGs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..atomic import write_file_atomic


def load_uint8(path: Path, size: int | None = None) -> torch.Tensor:
    """An image file as uint8 RGB ``[3, H, W]``; squashed to ``size``² (bicubic) when given."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        if size is not None and image.size != (size, size):
            image = image.resize((size, size), resample=Image.BICUBIC)
        array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def pil_to_uint8(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)


def chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def decoded_batches(
    paths: Sequence[Path], batch_size: int, num_workers: int, size: int | None = None
) -> Iterator[list[torch.Tensor]]:
    """Images decoded by a thread pool, one batch ahead of the consumer."""
    with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        pending = None
        for batch in chunks(list(paths), batch_size):
            future = pool.map(lambda p: load_uint8(p, size), batch)
            if pending is not None:
                yield list(pending)
            pending = future
        if pending is not None:
            yield list(pending)


IMAGE_FORMATS = ("png", "jpg")
QUANTIZE_MODES = ("round", "truncate")
PIL_DEFAULT_JPEG_QUALITY = 75  # what ``Image.save("x.jpg")`` uses when no quality is given


def to_uint8(array: np.ndarray, quantize: str = "round") -> np.ndarray:
    """Float pixels in [0, 1] (``[..., H, W, 3]``) → uint8: ``round`` as diffusers does, or ``truncate``
    (``astype(np.uint8)`` of ``x * 255``) as the official batch inference does."""
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {list(QUANTIZE_MODES)}, got {quantize!r}")
    scaled = np.clip(np.asarray(array, dtype=np.float32), 0.0, 1.0) * 255
    return (scaled.round() if quantize == "round" else scaled).astype(np.uint8)


def image_suffix(image_format: str) -> str:
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {list(IMAGE_FORMATS)}, got {image_format!r}")
    return f".{image_format}"


def save_image_atomic(image: Image.Image, path: Path, image_format: str = "png",
                      jpeg_quality: int = PIL_DEFAULT_JPEG_QUALITY) -> None:
    """Through a temporary sibling and a rename: a crash never leaves half an image under the real name."""
    options = {"format": "JPEG", "quality": int(jpeg_quality)} if image_format == "jpg" else {"format": "PNG"}
    image_suffix(image_format)
    write_file_atomic(path, lambda tmp: image.save(tmp, **options))


def save_png_atomic(image: Image.Image, path: Path) -> None:
    save_image_atomic(image, path, "png")
