"""The on-disk layout of a HICO-DET folder, as the official release and the common re-packagings name it.

Shared by every writer of a data set (the synthetic HICO-DET, HOI-Shapes) so the paths the datamodule and the
eval command read are spelled in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SPLIT_DIRS = {"train": "train2015", "test": "test2015"}


@dataclass
class HICODETFolder:
    root: Path

    @property
    def anno_bbox_mat(self) -> Path:
        return self.root / "anno_bbox.mat"

    @property
    def trainval_hico(self) -> Path:
        return self.root / "annotations" / "trainval_hico.json"

    @property
    def test_hico(self) -> Path:
        return self.root / "annotations" / "test_hico.json"

    @property
    def instances_train(self) -> Path:
        return self.root / "instances_train2015.json"

    @property
    def instances_test(self) -> Path:
        return self.root / "instances_test2015.json"

    @property
    def vocabulary_json(self) -> Path:
        return self.root / "hoi_vocabulary.json"

    def image_dir(self, split: str) -> Path:
        return self.root / "images" / SPLIT_DIRS[split]

    @property
    def train_image_dir(self) -> Path:
        return self.image_dir("train")

    @property
    def test_image_dir(self) -> Path:
        return self.image_dir("test")
