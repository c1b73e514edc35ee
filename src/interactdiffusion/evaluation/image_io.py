"""Reading and writing the images of an evaluation: uint8 tensors, threaded decoding, atomic PNGs."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image


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


def save_png_atomic(image: Image.Image, path: Path) -> None:
    """Write ``.<name>.tmp`` and rename: a crash never leaves half an image under the real name."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        image.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
