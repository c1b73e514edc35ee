"""Training and evaluation samples: a ``Scene`` plus its image (or its cached VAE latents).

An item is an index, or an ``(index, flip)`` pair that fixes the flip. For a plain index the flip coin is
drawn from torch's global generator, the one the training loader seeds per sample by (seed, epoch,
index) (``training.resumable_data``): the image path and the latent-cache path then make exactly the
same decisions, whatever the number of workers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..scene import MAX_INTERACTIONS
from ..vocab import HOIVocabulary
from .images import ImageLoadError, load_rgb
from .records import ImageRecord
from .transforms import MIN_BOX_FRACTION, CropGeometry, crop_image, to_tensor, training_scene

log = logging.getLogger(__name__)
MAX_SUBSTITUTIONS = 16


class HICOSampleDataset(Dataset):
    """Crops of annotated images as ``{"scene", "pixel_values"}`` or ``{"scene", "latent_mean", "latent_std"}``.

    An unreadable image is replaced by the next readable one (a counted warning), so one bad file never
    stops a long run; images missing on disk are best dropped up front (``images.split_missing``).
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        vocab: HOIVocabulary,
        image_dir: str | Path | None,
        resolution: int,
        *,
        random_flip: bool = False,
        min_box_fraction: float = MIN_BOX_FRACTION,
        max_interactions: int = MAX_INTERACTIONS,
        latent_cache=None,
    ):
        if image_dir is None and latent_cache is None:
            raise ValueError("HICOSampleDataset needs an image_dir or a latent cache")
        self.records = list(records)
        self.vocab = vocab
        self.image_dir = Path(image_dir) if image_dir is not None else None
        self.resolution = int(resolution)
        self.random_flip = random_flip
        self.min_box_fraction = min_box_fraction
        self.max_interactions = max_interactions
        self.latent_cache = latent_cache
        self.unreadable: list[str] = []

    def __len__(self) -> int:
        return len(self.records)

    def _flip_coin(self) -> bool:
        return self.random_flip and bool(torch.rand(()) < 0.5)

    def geometry(self, record: ImageRecord, flip: bool) -> CropGeometry:
        return CropGeometry.center(record.width, record.height, self.resolution, flip)

    def scene(self, index: int, flip: bool = False):
        record = self.records[index]
        return training_scene(record, self.vocab, self.geometry(record, flip), self.min_box_fraction,
                              self.max_interactions)

    def image(self, index: int, flip: bool = False) -> torch.Tensor:
        """The crop of image ``index`` as a [3, R, R] tensor in [-1, 1]; raises ``ImageLoadError``."""
        record = self.records[index]
        image = load_rgb(self.image_dir / record.file_name)
        if image.size != (record.width, record.height):
            log.warning("%s is %dx%d but annotated as %dx%d; resizing it to the annotated size",
                        record.file_name, *image.size, record.width, record.height)
            image = image.resize((record.width, record.height))
        return to_tensor(crop_image(image, self.geometry(record, flip)))

    def time_ids(self, index: int) -> torch.Tensor:
        """SDXL's micro-conditioning of this crop: original (H, W), crop (top, left), target (H, W)."""
        return torch.tensor(self.geometry(self.records[index], False).time_ids(), dtype=torch.float32)

    def _load(self, index: int, flip: bool) -> dict:
        sample: dict = {"scene": self.scene(index, flip), "time_ids": self.time_ids(index)}
        if self.latent_cache is not None:
            file_name = self.records[index].file_name
            if file_name not in self.latent_cache:
                raise ImageLoadError(f"{file_name} is not in the latent cache (unreadable when it was built)")
            sample["latent_mean"], sample["latent_std"] = self.latent_cache.get(file_name, flip)
        else:
            sample["pixel_values"] = self.image(index, flip)
        return sample

    def __getitem__(self, item) -> dict:
        index, flip = (int(item[0]), bool(item[1])) if isinstance(item, (tuple, list)) else (int(item), None)
        if flip is None:
            flip = self._flip_coin()
        for attempt in range(MAX_SUBSTITUTIONS):
            candidate = (index + attempt) % len(self.records)
            try:
                return self._load(candidate, flip)
            except ImageLoadError as err:
                self.unreadable.append(self.records[candidate].file_name)
                log.warning("skipping %s (%s); %d unreadable so far in this process; using the next image",
                            self.records[candidate].file_name, err, len(self.unreadable))
        where = self.image_dir if self.image_dir is not None else "the latent cache"
        raise ImageLoadError(
            f"{MAX_SUBSTITUTIONS} consecutive training images in {where} could not be read (starting at "
            f"{self.records[index % len(self.records)].file_name}; {len(self.unreadable)} unreadable so far): "
            "check data.train_image_dir and the image files"
        )
