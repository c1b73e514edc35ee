"""``HICODataModule``: HICO-DET (or the synthetic stand-in) for Lightning.

- train: the training split, center crops with random flips, from images or from the optional latent
  cache (the same crops and flips either way);
- val / test: the test split's images with at least one visible pair (its layouts), no flip; ``val``
  uses a fixed subset of ``num_val_images`` (all when ``None``), ``test`` all of them;
- ``batch_size`` is **per device**: the effective batch is ``batch_size × devices × accumulate_grad_batches``
  (the paper: 4 × 2 GPUs × 2 = 16).

Attributes for the training module: ``vocab`` (``HOIVocabulary``), ``phrase_index`` (``PhraseIndex`` of
``vocab.phrases()``; batch phrase ids index it) and ``val_scenes(n)`` for image-logging callbacks.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from ..conditioning import PhraseIndex
from ..scene import MAX_INTERACTIONS, Scene
from ..vocab import HOIVocabulary
from .annotations import Annotations, load_annotations
from .collate import Collate
from .dataset import HICOSampleDataset
from .images import split_missing
from .latent_cache import CROP_POLICY, LatentCache, build_latent_cache, latent_cache_folder
from .records import ImageRecord
from .synthetic import ensure_synthetic_hicodet
from .transforms import MIN_BOX_FRACTION

log = logging.getLogger(__name__)


class HICODataModule(L.LightningDataModule):
    def __init__(
        self,
        train_annotations: str | Path,
        test_annotations: str | Path | None = None,
        vocabulary: str | Path | None = None,
        train_image_dir: str | Path | None = None,
        test_image_dir: str | Path | None = None,
        resolution: int = 512,
        batch_size: int = 4,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        pin_memory: bool = True,
        random_flip: bool = True,
        min_box_fraction: float = MIN_BOX_FRACTION,
        max_interactions: int = MAX_INTERACTIONS,
        num_val_images: int | None = 64,
        seed: int = 0,
        drop_last: bool = True,
        cache_dir: str | Path | None = None,
        latent_cache: bool = False,
        latent_cache_dir: str | Path | None = None,
        latent_dtype: str = "float16",
        latent_batch_size: int = 8,
        vae: Any = None,
        synthetic: dict | None = None,
    ):
        """``synthetic``: ``{"root": ..., "num_train": ..., ...}`` generates ``write_synthetic_hicodet``
        data into ``root`` if it is not there yet (same arguments → nothing regenerated)."""
        super().__init__()
        self.save_hyperparameters(ignore=["vae"], logger=False)
        self.train_annotations = Path(train_annotations)
        self.test_annotations = Path(test_annotations) if test_annotations else self.train_annotations
        self.vocabulary = vocabulary
        self.train_image_dir = Path(train_image_dir) if train_image_dir else None
        self.test_image_dir = Path(test_image_dir) if test_image_dir else None
        self.resolution = int(resolution)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = pin_memory and torch.cuda.is_available()
        self.random_flip = random_flip
        self.min_box_fraction = min_box_fraction
        self.max_interactions = max_interactions
        self.num_val_images = num_val_images
        self.seed = seed
        self.drop_last = drop_last
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.use_latent_cache = latent_cache
        self.latent_cache_dir = Path(latent_cache_dir) if latent_cache_dir else (
            self.cache_dir / "latents" if self.cache_dir else None
        )
        self.latent_dtype = latent_dtype
        self.latent_batch_size = latent_batch_size
        self._vae = vae
        self.synthetic = dict(synthetic) if synthetic else None

        self.vocab: HOIVocabulary | None = None
        self.phrase_index: PhraseIndex | None = None
        self.train_dataset: HICOSampleDataset | None = None
        self.val_dataset: HICOSampleDataset | None = None
        self.test_dataset: HICOSampleDataset | None = None
        self.skipped: dict[str, int] = {}

    # -- annotations ----------------------------------------------------------------------------------
    def _annotation_cache(self):
        return self.cache_dir / "annotations" if self.cache_dir else None

    def _load(self, split: str) -> Annotations:
        path = self.train_annotations if split == "train" else self.test_annotations
        image_dir = self.train_image_dir if split == "train" else self.test_image_dir
        return load_annotations(path, split, self.vocabulary, image_dir=image_dir, cache_dir=self._annotation_cache())

    def _records_with_images(self, annotations: Annotations, image_dir: Path | None, split: str) -> list[ImageRecord]:
        records = annotations.records if split == "train" else annotations.non_empty()
        if image_dir is None:
            return records
        present, missing = split_missing(records, image_dir)
        if missing:
            self.skipped[f"{split}_image_missing"] = len(missing)
            log.warning("%d %s images listed in %s are missing under %s (first: %s); skipped",
                        len(missing), split, annotations.source, image_dir, missing[0])
        return present

    # -- latent cache -----------------------------------------------------------------------------------
    def _resolve_vae(self):
        if self._vae is not None:
            return self._vae
        trainer = getattr(self, "trainer", None)
        module = getattr(trainer, "lightning_module", None) if trainer is not None else None
        backbone = getattr(module, "backbone", None)
        if backbone is None:
            raise RuntimeError(
                "latent_cache=true needs a VAE: attach the datamodule to a trainer whose module has `backbone.vae`, "
                "or pass vae= to HICODataModule"
            )
        return backbone.vae

    def _latent_folder(self, vae) -> Path:
        from ..models.backbone import module_fingerprint

        if self.latent_cache_dir is None:
            raise ValueError("latent_cache=true needs cache_dir or latent_cache_dir")
        return latent_cache_folder(self.latent_cache_dir, module_fingerprint(vae), self.resolution, CROP_POLICY)

    def _image_dataset(self, records, split: str, vocab: HOIVocabulary) -> HICOSampleDataset:
        image_dir = self.train_image_dir if split == "train" else self.test_image_dir
        return HICOSampleDataset(
            records, vocab, image_dir, self.resolution,
            random_flip=self.random_flip and split == "train", min_box_fraction=self.min_box_fraction,
            max_interactions=self.max_interactions,
        )

    # -- Lightning hooks ----------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """One process: generate synthetic data if asked, warm the annotation caches, build the latent cache."""
        if self.synthetic:
            options = dict(self.synthetic)
            ensure_synthetic_hicodet(options.pop("root"), **options)
        train = self._load("train")
        self._load("test")
        if self.use_latent_cache:
            records = self._records_with_images(train, self.train_image_dir, "train")
            vae = self._resolve_vae()
            build_latent_cache(self._image_dataset(records, "train", train.vocab), vae, self._latent_folder(vae),
                               batch_size=self.latent_batch_size, dtype=self.latent_dtype)

    def setup(self, stage: str | None = None) -> None:
        if self.vocab is not None and self.train_dataset is not None:
            return
        if self.synthetic and not self.train_annotations.is_file():
            self.prepare_data()
        train = self._load("train")
        test = self._load("test")
        self.vocab = train.vocab
        self.phrase_index = PhraseIndex(self.vocab.phrases())
        self.skipped = {}
        for parsed in (train, test):
            for key, value in parsed.skipped.items():
                self.skipped[f"{parsed.split}_{key}"] = value

        train_records = self._records_with_images(train, self.train_image_dir, "train")
        latent_cache = None
        if self.use_latent_cache:
            latent_cache = LatentCache(self._latent_folder(self._resolve_vae()))
            before = len(train_records)
            train_records = [r for r in train_records if r.file_name in latent_cache]
            if before - len(train_records):
                self.skipped["train_image_unreadable"] = before - len(train_records)
        self.train_dataset = HICOSampleDataset(
            train_records, self.vocab, self.train_image_dir, self.resolution,
            random_flip=self.random_flip, min_box_fraction=self.min_box_fraction,
            max_interactions=self.max_interactions, latent_cache=latent_cache,
        )
        test_records = self._records_with_images(test, self.test_image_dir, "test")
        self.test_dataset = self._image_dataset(test_records, "test", self.vocab)
        val_records = test_records if self.num_val_images is None else test_records[: self.num_val_images]
        self.val_dataset = self._image_dataset(val_records, "test", self.vocab)
        self._print_summary(train, test)

    def _print_summary(self, train: Annotations, test: Annotations) -> None:
        lines = [train.summary(), test.summary(),
                 f"datasets: train {len(self.train_dataset)}, val {len(self.val_dataset)}, test {len(self.test_dataset)} "
                 f"images at {self.resolution}px"
                 + (" (latent cache)" if self.use_latent_cache else "")]
        if self.skipped:
            lines.append("skipped/repaired: " + ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())))
        log.info("HICO-DET data:\n  %s", "\n  ".join(lines))

    def _collate(self) -> Collate:
        return Collate(self.phrase_index, self.max_interactions)

    def train_dataloader(self) -> DataLoader:
        """Shuffled with a generator seeded by ``seed`` (order and worker seeds reproducible); the
        training entry point may wrap it to resume mid-epoch (``training.resumable_data``)."""
        return DataLoader(
            self.train_dataset,
            batch_size=self.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(self.seed),
            collate_fn=self._collate(),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            drop_last=self.drop_last and len(self.train_dataset) >= self.batch_size,
            persistent_workers=self.num_workers > 0,
        )

    def _eval_loader(self, dataset: HICOSampleDataset) -> DataLoader:
        return DataLoader(dataset, batch_size=self.eval_batch_size, shuffle=False, collate_fn=self._collate(),
                          num_workers=self.num_workers, pin_memory=self.pin_memory)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.val_dataset)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_dataset)

    def val_scenes(self, n: int) -> list[tuple[Scene, torch.Tensor]]:
        """The first ``n`` validation crops as (scene, image [3, R, R] in [-1, 1]); always the same ones."""
        if self.val_dataset is None:
            self.setup("fit")
        out = []
        for index in range(min(n, len(self.val_dataset))):
            sample = self.val_dataset[index]
            out.append((sample["scene"], sample["pixel_values"]))
        return out
