"""The HICO-DET datamodule on HOI-Shapes: the same class, with the data set generated when missing."""

from __future__ import annotations

from ..data.datamodule import HICODataModule
from .dataset import ensure_hoi_shapes


class HOIShapesDataModule(HICODataModule):
    """``HICODataModule`` reading a HOI-Shapes folder, which it writes first if it is not there.

    ``shapes``: ``{"root": ..., "seed": ..., "num_train": ..., "num_test": ..., "size": ...}``, the
    arguments of ``interactdiffusion-data make-shapes``; the folder is regenerated only when they
    differ from the ones recorded in its ``hoi_shapes.json``. Everything else is ``HICODataModule``'s.
    """

    def __init__(self, shapes: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.shapes = dict(shapes) if shapes else None

    def ensure_data(self) -> None:
        if self.shapes:
            options = dict(self.shapes)
            ensure_hoi_shapes(options.pop("root"), **options)

    def prepare_data(self) -> None:
        self.ensure_data()
        super().prepare_data()

    def setup(self, stage: str | None = None) -> None:
        if self.shapes and not self.train_annotations.is_file():
            self.ensure_data()
        super().setup(stage)
