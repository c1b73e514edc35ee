"""``WandbRunLogger``: Lightning's ``WandbLogger`` with the project's dashboards on wandb's own types.

``configs/logger/wandb.yaml`` builds it. Beyond Lightning's logger it

- writes the resolved config as flattened ``a.b.c`` keys (``recipe.lr``, ``model.grounding.fuser``), the
  names a Hydra override uses, so wandb's run table can filter and group on any of them;
- logs training samples as ``samples/images``: each generated image with its layout and the real image
  with the same boxes, as native box overlays (``dashboards.media``);
- logs an eval row (``log_eval_row``: the mAP table, the per-class AP table, a gallery with GT and the
  detector's top detections) and a periodic evaluation's per-class table (``log_eval_step``).

Scalars keep Lightning's behaviour: every ``log_metrics`` also updates the run summary, so an eval row's
``eval/<protocol>/map_<setting>_<split>``, ``eval/fid`` and ``eval/kid_mean`` are columns of the run table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from .eval_tables import GALLERY_KEY, PER_CLASS_KEY, per_class_table, read_row_evaluations, row_gallery
from .media import sample_pair

SAMPLES_KEY = "samples/images"
MAP_TABLE_KEY = "map_table"


def flatten_config(params: Mapping[str, Any], parent: str = "") -> dict[str, Any]:
    """Nested mappings as ``{"a.b.c": value}``; lists and scalars are kept as values."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{parent}.{key}" if parent else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten_config(value, name))
        else:
            out[name] = value
    return out


def map_table(results: Mapping[str, Any]):
    """The row's line of the paper's table per protocol (``report.COLUMNS``), as numbers."""
    import wandb

    from ..evaluation.report import COLUMNS

    header = ["Model", "Detector", "Protocol", *(name for name, _, _ in COLUMNS)]
    rows = [[results["label"] or results["row"], results["detector"]["name"], protocol, results.get("fid"),
             results.get("kid_mean"), *(values[setting][split] for _, setting, split in COLUMNS[2:])]
            for protocol, values in results["map"].items()]
    return wandb.Table(columns=header, data=rows)


class WandbRunLogger(WandbLogger):
    """``gallery_size``: scored images an eval row shows with their boxes; ``top_detections``: detections
    drawn per gallery image (highest scores). Every other argument is ``WandbLogger``'s."""

    def __init__(self, *args: Any, gallery_size: int = 16, top_detections: int = 3, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if gallery_size < 0 or top_detections < 0:
            raise ValueError(f"gallery_size and top_detections must be >= 0, got {gallery_size}, {top_detections}")
        self.gallery_size = int(gallery_size)
        self.top_detections = int(top_detections)

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        """The entry points pass the resolved config as ``{"config": cfg, ...}``: its keys go to the top
        level (wandb already shows them under "config"), every nested key flattened."""
        from lightning.fabric.utilities.logger import _convert_params

        params = dict(_convert_params(params))
        config = params.pop("config", None)
        flat = flatten_config(config) if isinstance(config, Mapping) else {}
        flat.update(flatten_config(params))
        super().log_hyperparams(flat)

    @rank_zero_only
    def log_samples(self, scenes: Sequence, generated: Sequence, reals: Sequence, step: int) -> None:
        """Each scene's generated image (box group ``layout``) beside its real image (``ground_truth``)."""
        images = []
        for scene, fake, real in zip(scenes, generated, reals):
            images += sample_pair(scene, fake, real)
        self.log_metrics({SAMPLES_KEY: images}, step=step)

    @rank_zero_only
    def log_eval_step(self, evaluations: Mapping[str, Mapping[str, Any]], step: int, prefix: str = "eval") -> None:
        """A periodic evaluation's per-class AP table at the training step (the curves are scalars)."""
        self.log_metrics({f"{prefix}/{PER_CLASS_KEY}": per_class_table(evaluations)}, step=step)

    @rank_zero_only
    def log_eval_row(self, cfg, results: Mapping[str, Any], prefix: str = "eval") -> None:
        """An eval row's tables and gallery, read from its output folder (works for a skipped, finished row)."""
        media: dict[str, Any] = {f"{prefix}/{MAP_TABLE_KEY}": map_table(results)}
        evaluations = read_row_evaluations(cfg.output_dir, list(results["map"]))
        media[f"{prefix}/{PER_CLASS_KEY}"] = per_class_table(evaluations)
        gallery = row_gallery(cfg, results, self.gallery_size, self.top_detections)
        if gallery:
            media[f"{prefix}/{GALLERY_KEY}"] = gallery
        self.log_metrics(media, step=0)
        self.experiment.summary.update({"row": results["row"], "label": results["label"],
                                        "detector": results["detector"]["name"], "meaningful": results["meaningful"]})
