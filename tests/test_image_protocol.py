"""How generated images are quantised and stored (the official batch inference: truncate, JPEG 75)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from interactdiffusion.evaluation.image_io import save_image_atomic, to_uint8


def test_truncate_is_the_official_cast_and_round_is_diffusers():
    values = np.array([[[0.0, 0.5, 1.0], [0.9999, 0.004, 1.5]]], dtype=np.float32)
    official = (np.clip(values, 0, 1) * 255).astype(np.uint8)  # inference_batch.py: astype(np.uint8)
    assert np.array_equal(to_uint8(values, "truncate"), official)
    assert to_uint8(values, "truncate")[0, 0, 1] == 127 and to_uint8(values, "round")[0, 0, 1] == 128
    from diffusers.image_processor import VaeImageProcessor

    assert np.array_equal(np.asarray(VaeImageProcessor.numpy_to_pil(np.clip(values, 0, 1)[None])[0]),
                          to_uint8(values, "round"))


def test_jpeg_at_the_given_quality(tmp_path):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    save_image_atomic(image, tmp_path / "a.jpg", "jpg", 75)
    image.save(tmp_path / "pil_default.jpg")  # what the official code wrote: PIL's default quality
    assert (tmp_path / "a.jpg").read_bytes() == (tmp_path / "pil_default.jpg").read_bytes()
    save_image_atomic(image, tmp_path / "b.png", "png")
    with Image.open(tmp_path / "b.png") as png:
        assert png.format == "PNG" and np.array_equal(np.asarray(png), np.asarray(image))
