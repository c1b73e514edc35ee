"""Optional cache of VAE posteriors: mean and std for every training crop and its mirror image.

Encoding 512² images with the SD VAE dominates a data-loading step; the posterior of a crop does not
change between epochs, only the sample drawn from it. ``build_latent_cache`` encodes every image once
(both flips, the same center crop as the image path) into memory-mapped ``.npy`` files; training draws
``mean + std * noise`` from them. The folder name is keyed by the VAE's fingerprint, the resolution and
the crop policy, so a different VAE or recipe never reuses it. ``meta.json`` is written last: a folder
without it is an interrupted build and is rebuilt.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..atomic import folder_atomic
from .images import ImageLoadError
from .records import ImageRecord

log = logging.getLogger(__name__)
CROP_POLICY = "center-shorter-side-bicubic-v1"
LATENT_CACHE_VERSION = 1


def latent_cache_folder(root: str | Path, vae_fingerprint: str, resolution: int, crop_policy: str = CROP_POLICY) -> Path:
    return Path(root) / f"latents-{vae_fingerprint}-{resolution}px-{crop_policy}"


class LatentCache:
    """Read side: memory-mapped arrays ``mean``/``std`` of shape [N, 2 (flip), C, h, w]."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        meta_file = self.folder / "meta.json"
        if not meta_file.is_file():
            raise FileNotFoundError(f"no complete latent cache in {self.folder} (meta.json missing)")
        self.meta = json.loads(meta_file.read_text())
        self.mean = np.load(self.folder / "mean.npy", mmap_mode="r")
        self.std = np.load(self.folder / "std.npy", mmap_mode="r")
        self.valid = np.load(self.folder / "valid.npy")
        names = json.loads((self.folder / "file_names.json").read_text())
        self.rows = {name: k for k, name in enumerate(names) if self.valid[k]}

    def __contains__(self, file_name: str) -> bool:
        return file_name in self.rows

    def get(self, file_name: str, flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) as float32 [C, h, w]; ``KeyError`` for an image the build could not read."""
        row = self.rows[file_name]
        side = 1 if flip else 0
        mean = torch.from_numpy(np.array(self.mean[row, side], dtype=np.float32))
        std = torch.from_numpy(np.array(self.std[row, side], dtype=np.float32))
        return mean, std


def is_complete(folder: str | Path, file_names: Sequence[str]) -> bool:
    folder = Path(folder)
    try:
        meta = json.loads((folder / "meta.json").read_text())
        names = json.loads((folder / "file_names.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return meta.get("version") == LATENT_CACHE_VERSION and names == list(file_names)


@torch.no_grad()
def build_latent_cache(
    dataset,
    vae,
    folder: str | Path,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    dtype: str = "float16",
    num_workers: int = 0,
) -> LatentCache:
    """Encode every record of ``dataset`` (a ``HICOSampleDataset`` reading images) twice: as is and flipped.

    Runs in one process (``prepare_data``). Unreadable images are marked invalid (and skipped by the
    dataset like unreadable images), never fatal.
    """
    from torch.utils.data import DataLoader

    folder = Path(folder)
    records: list[ImageRecord] = dataset.records
    file_names = [r.file_name for r in records]
    if is_complete(folder, file_names):
        return LatentCache(folder)
    from ..models.space_to_depth import downscale_factor, latent_channels

    with folder_atomic(folder) as tmp:  # an older or interrupted cache is replaced whole
        device = torch.device(device) if device is not None else vae.device
        vae_dtype = vae.dtype
        factor = downscale_factor(vae)
        channels = latent_channels(vae)
        side = dataset.resolution // factor
        shape = (len(records), 2, channels, side, side)
        np_dtype = np.dtype(dtype)
        mean = np.lib.format.open_memmap(tmp / "mean.npy", mode="w+", dtype=np_dtype, shape=shape)
        std = np.lib.format.open_memmap(tmp / "std.npy", mode="w+", dtype=np_dtype, shape=shape)
        valid = np.ones(len(records), dtype=bool)

        loader = DataLoader(_BothFlips(dataset), batch_size=batch_size, num_workers=num_workers,
                            collate_fn=_stack_valid)
        for indices, images, ok in loader:
            valid[indices[~ok].numpy()] = False
            if not ok.any():
                continue
            pixels = images[ok].flatten(0, 1).to(device=device, dtype=vae_dtype)  # [2B, 3, R, R]: as is, flipped
            posterior = vae.encode(pixels).latent_dist
            count = int(ok.sum())
            rows = indices[ok].numpy()
            mean[rows] = posterior.mean.float().cpu().view(count, 2, channels, side, side).numpy().astype(np_dtype)
            std[rows] = posterior.std.float().cpu().view(count, 2, channels, side, side).numpy().astype(np_dtype)
        mean.flush()
        std.flush()
        del mean, std
        np.save(tmp / "valid.npy", valid)
        (tmp / "file_names.json").write_text(json.dumps(file_names))
        meta = {
            "version": LATENT_CACHE_VERSION,
            "resolution": dataset.resolution,
            "crop_policy": CROP_POLICY,
            "dtype": dtype,
            "images": len(records),
            "unreadable": int((~valid).sum()),
        }
        (tmp / "meta.json").write_text(json.dumps(meta))
    if (~valid).any():
        log.warning("latent cache: %d unreadable images left out", int((~valid).sum()))
    return LatentCache(folder)


class _BothFlips(torch.utils.data.Dataset):
    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        try:
            return index, torch.stack([self.dataset.image(index, False), self.dataset.image(index, True)])
        except ImageLoadError as err:
            log.warning("latent cache: %s", err)
            return index, None


def _stack_valid(items):
    """(indices, images [B, 2, 3, R, R] with zeros where unreadable, readable mask)."""
    indices = torch.tensor([i for i, _ in items])
    ok = torch.tensor([img is not None for _, img in items], dtype=torch.bool)
    template = next((img for _, img in items if img is not None), None)
    if template is None:
        return indices, None, ok
    images = torch.stack([img if img is not None else torch.zeros_like(template) for _, img in items])
    return indices, images, ok
