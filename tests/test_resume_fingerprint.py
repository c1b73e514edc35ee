"""A resumed command compares the bytes behind a weights path, not only the path."""

from __future__ import annotations

import os

from interactdiffusion.resume import content_fingerprint, settings_difference


def test_fingerprint_follows_the_bytes_of_a_file_and_of_a_folder(tmp_path):
    weights = tmp_path / "adapter.safetensors"
    weights.write_bytes(b"old adapter")
    first = content_fingerprint(weights)
    assert first.startswith("sha256:") and content_fingerprint(str(weights)) == first
    weights.write_bytes(b"new adapter")  # re-published under the same name
    os.utime(weights, ns=(1, 1))  # same size: a new mtime, as a real rewrite has, keys the per-process cache
    assert content_fingerprint(weights) != first
    assert "weights_sha256" in settings_difference({"weights_sha256": first},
                                                   {"weights_sha256": content_fingerprint(weights)})

    folder = tmp_path / "backbone"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "model.safetensors").write_bytes(b"unet")
    before = content_fingerprint(folder)
    (folder / "unet" / "model.safetensors").write_bytes(b"unet, re-trained")
    assert content_fingerprint(folder) != before
    (folder / "unet" / "model.safetensors").rename(folder / "unet" / "other.safetensors")
    renamed = content_fingerprint(folder)
    (folder / "unet" / "other.safetensors").rename(folder / "unet" / "model.safetensors")
    assert renamed != content_fingerprint(folder)  # names count, not only bytes

    assert content_fingerprint(None) is None and content_fingerprint("") is None
    assert content_fingerprint(tmp_path / "missing") is None
