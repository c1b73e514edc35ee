"""``HOIEvalCallback``: the evaluation of ``interactdiffusion-eval`` on a small fixed subset during training.

The loss says little about whether boxes and interactions are obeyed (REFERENCE §2: boxes start being
obeyed suddenly); HOI detection mAP on generated images does. Every ``every_n_steps`` optimiser steps
(and at the end) the ranks draw the first ``num_layouts`` test layouts with the module's *current*
adapter (its EMA when there is one), each rank its share (``training.distributed``), and run the HOI
detector on them; rank 0 gathers the detections and computes mAP against the rescaled GT
(and, optionally, FID/KID against the real images of the same layouts), writes
``<run>/hoi_eval/step_XXXXXXX.json`` and logs ``eval/map_default_full``, ``eval/map_default_rare``,
``eval/map_default_non_rare``, ``eval/map_known_object_{full,rare,non_rare}`` (first protocol;
others as ``eval/<protocol>/map_...``) and ``eval/fid``, ``eval/kid_mean``. The numbers are broadcast
to every rank and put into ``trainer.callback_metrics``, so ``ModelCheckpoint(monitor=...)`` or an
hparams sweep can use them; the other ranks wait at the broadcast only for the scoring.

Generation, detection and scoring are the eval command's own functions (``evaluation.generation``,
``evaluation.scoring``), so the numbers are those of ``interactdiffusion-eval`` with the same settings
on the same layouts.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer

from ..atomic import write_json_atomic
from ..utils.pylogger import RankedLogger

log = RankedLogger(__name__, rank_zero_only=True)

PAPER_NEGATIVE_PROMPT = (
    "longbody, lowres, bad anatomy, bad hands, missing fingers, extra digit, fewer digits, cropped, "
    "worst quality, low quality"
)


def _plain(value: Any) -> Any:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


class HOIEvalCallback(Callback):
    """Periodic HOI mAP (and optional FID/KID) of generated images on a fixed subset of test layouts.

    ``detector``: a detector config (``configs/detector/*.yaml`` content, with ``_target_``, or a plain
    ``{kind: ..., ...}`` for ``build_detector``) or a built ``HOIDetector``. ``metrics``: ``None`` (no
    FID), a ``configs/metrics`` config or a built ``ImageQualityMetrics``. ``annotations`` /
    ``image_dir`` / ``vocabulary`` / ``anno_mat``: the test split; ``None`` takes the datamodule's
    ``test_annotations``, ``test_image_dir`` and ``vocabulary``. ``resolution``: ``None`` = the
    backbone's.
    """

    def __init__(
        self,
        every_n_steps: int = 10000,
        num_layouts: int = 64,
        detector: Any = None,
        metrics: Any = None,
        protocols: list[str] | tuple[str, ...] = ("fgahoi",),
        annotations: str | None = None,
        image_dir: str | None = None,
        vocabulary: str | None = None,
        anno_mat: str | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        scheduled_sampling_beta: float = 1.0,
        scheduler: str = "plms",
        negative_prompt: str = PAPER_NEGATIVE_PROMPT,
        seed: int = 489,
        resolution: int | None = None,
        batch_size: int = 8,
        at_start: bool = False,
        at_end: bool = True,
        use_ema: bool = True,
        save_images: bool = False,
        output_subdir: str = "hoi_eval",
        prefix: str = "eval",
    ):
        from ..evaluation.hoi_map import PROTOCOLS

        if every_n_steps <= 0:
            raise ValueError(f"every_n_steps must be positive, got {every_n_steps}")
        if num_layouts <= 0:
            raise ValueError(f"num_layouts must be positive, got {num_layouts}")
        protocols = tuple(_plain(protocols) or ())
        if not protocols or any(p not in PROTOCOLS for p in protocols):
            raise ValueError(f"protocols must be a non-empty list of {list(PROTOCOLS)}, got {list(protocols)}")
        if detector is None:
            raise ValueError("HOIEvalCallback needs a detector (a configs/detector config or an HOIDetector)")
        self.every_n_steps = int(every_n_steps)
        self.num_layouts = int(num_layouts)
        self.detector_spec = _plain(detector)
        self.metrics_spec = _plain(metrics)
        self.protocols = protocols
        self.annotations = annotations
        self.image_dir = image_dir
        self.vocabulary = vocabulary
        self.anno_mat = anno_mat
        self.num_inference_steps = int(num_inference_steps)
        self.guidance_scale = float(guidance_scale)
        self.beta = float(scheduled_sampling_beta)
        self.scheduler = str(scheduler)
        self.negative_prompt = negative_prompt or ""
        self.seed = int(seed)
        self.resolution = resolution
        self.batch_size = int(batch_size)
        self.at_start = at_start
        self.at_end = at_end
        self.use_ema = use_ema
        self.save_images = save_images
        self.output_subdir = output_subdir
        self.prefix = prefix
        self._prepared = False
        self._layouts: list = []
        self._gt = None
        self._vocab = None
        self._detector = None
        self._metrics = None
        self._last_step = -1
        self.history: list[dict[str, Any]] = []  # rank 0: the summary of every evaluation
        self.last_evaluations: dict[str, Any] | None = None  # rank 0: the latest evaluator outputs

    # -- hooks -------------------------------------------------------------------------------------
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Missing detector / Inception weights are an error now, not after the first N steps."""
        from ..evaluation.settings import missing_inputs

        problems = missing_inputs(self.detector_spec if not hasattr(self.detector_spec, "detect") else None,
                                  self.metrics_spec if not hasattr(self.metrics_spec, "update_fake") else None)
        if problems:
            raise FileNotFoundError("HOIEvalCallback: missing inputs:\n  " + "\n  ".join(problems))

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.at_start and trainer.global_step == 0:
            self.run(trainer, pl_module)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if step > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self.run(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.at_end and trainer.global_step != self._last_step and not trainer.sanity_checking:
            self.run(trainer, pl_module)

    # -- the evaluation ----------------------------------------------------------------------------
    def _size(self, pl_module: LightningModule) -> int:
        if self.resolution:
            return int(self.resolution)
        hparams = getattr(pl_module, "hparams", {}) or {}
        backbone = hparams.get("backbone") if hasattr(hparams, "get") else None
        return int((backbone or {}).get("resolution") or 512)

    def _prepare(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Layouts, GT and the real images: once per process."""
        if self._prepared:
            return
        from ..data.annotations import load_annotations
        from ..evaluation.generation import make_layouts
        from ..evaluation.scoring import generated_ground_truth

        datamodule = getattr(trainer, "datamodule", None)
        annotations = self.annotations or getattr(datamodule, "test_annotations", None)
        if annotations is None:
            raise ValueError("HOIEvalCallback: set annotations= (no datamodule with test_annotations)")
        vocabulary = self.vocabulary or getattr(datamodule, "vocabulary", None)
        image_dir = self.image_dir or getattr(datamodule, "test_image_dir", None)
        cache = getattr(datamodule, "cache_dir", None)
        parsed = load_annotations(annotations, "test", vocabulary, image_dir=image_dir,
                                  cache_dir=Path(cache) / "annotations" if cache else None)
        self._vocab = parsed.vocab
        size = self._size(pl_module)
        self._layouts = make_layouts(parsed.records, parsed.vocab, size, self.num_layouts)
        if not self._layouts:
            raise ValueError(f"HOIEvalCallback: {annotations} has no test image with a visible pair")
        self._gt = generated_ground_truth([layout.record for layout in self._layouts], size)
        self._image_dir = Path(image_dir) if image_dir else None
        self._prepared = True

    def _build_detector(self, pl_module: LightningModule) -> None:
        from ..evaluation.scoring import build_detector

        if self._detector is None:
            spec = self.detector_spec
            self._detector = spec if hasattr(spec, "detect") else build_detector(spec, self._vocab, str(pl_module.device))

    def _build_metrics(self, pl_module: LightningModule) -> None:
        """FID/KID (rank 0 only: it alone scores)."""
        from ..evaluation.scoring import reference_batches

        device = str(pl_module.device)
        if self._metrics is None and self.metrics_spec is not None:
            spec = self.metrics_spec
            if hasattr(spec, "update_fake"):
                self._metrics = spec
            else:
                from ..evaluation.scoring import build_metrics

                self._metrics = build_metrics(spec, device)
            paths = []
            if self._image_dir is not None:
                paths = [self._image_dir / layout.record.file_name for layout in self._layouts]
                paths = [p for p in paths if p.is_file()]
            if not paths:
                log.warning("HOIEvalCallback: no real test images found; FID/KID are not computed")
                self._metrics = False
            else:
                size = self._gt[0].width
                self._metrics.add_reference([p.name for p in paths], reference_batches(paths, size, self.batch_size, 2),
                                            resolution=size)

    def settings(self, pl_module: LightningModule):
        from ..evaluation.settings import EvalSettings

        return EvalSettings(
            batch_size=self.batch_size, steps=self.num_inference_steps, guidance_scale=self.guidance_scale,
            beta=self.beta, seed=self.seed, scheduler=self.scheduler, negative_prompt=self.negative_prompt,
            resolution=self._size(pl_module), precision="fp32", device=str(pl_module.device),
            protocols=self.protocols,
        )

    @torch.no_grad()
    def generate(self, trainer: Trainer, pl_module: LightningModule, layouts: list | None = None) -> list:
        """Images of ``layouts`` (default: the whole subset) with the module's current adapter (EMA
        weights when present)."""
        layouts = self._layouts if layouts is None else layouts
        from ..evaluation.generation import generate_images
        from ..generation.building import module_pipeline

        with module_pipeline(trainer, pl_module, self.scheduler, self.use_ema) as pipe:
            return generate_images(pipe, [layout.scene for layout in layouts], self.settings(pl_module))

    def draw_and_detect(self, trainer: Trainer, pl_module: LightningModule) -> tuple[list[int], list, list | None]:
        """This rank's share: (layout indices, detections per image, uint8 pixels when FID is on)."""
        from ..evaluation.image_io import pil_to_uint8, save_png_atomic
        from ..evaluation.scoring import detect_images
        from .distributed import rank_share

        self._prepare(trainer, pl_module)
        self._build_detector(pl_module)
        mine = rank_share(trainer, len(self._layouts))
        layouts = [self._layouts[k] for k in mine]
        images = self.generate(trainer, pl_module, layouts) if layouts else []
        pixels = [pil_to_uint8(image) for image in images]
        size = self._gt[0].width
        detections = detect_images(self._detector, pixels, [(size, size)] * len(pixels)) if pixels else []
        if self.save_images:
            folder = Path(trainer.default_root_dir) / self.output_subdir / f"step_{trainer.global_step:07d}"
            folder.mkdir(parents=True, exist_ok=True)
            for layout, image in zip(layouts, images):
                save_png_atomic(image, folder / layout.image_name)
        return mine, detections, (pixels if self.metrics_spec is not None else None)

    def evaluate(self, trainer: Trainer, pl_module: LightningModule, shares: list | None = None,
                 started: float | None = None) -> dict[str, float]:
        """Score the gathered shares (rank 0; by default this process's own, the whole subset on one
        device); the flat metrics to log."""
        from ..evaluation.report import map_summary
        from ..evaluation.scoring import score_map
        from .distributed import reassemble

        started = time.perf_counter() if started is None else started
        if shares is None:
            shares = [self.draw_and_detect(trainer, pl_module)]
        self._build_metrics(pl_module)
        count = len(self._layouts)
        detections = reassemble(count, [(indices, found) for indices, found, _ in shares])
        evaluations = score_map(self._gt, detections, self._vocab, self.protocols, self.anno_mat)
        self.last_evaluations = evaluations  # per-class AP, for loggers that show it (dashboards.logger)
        metrics: dict[str, float] = {}
        summary: dict[str, Any] = {"step": trainer.global_step, "num_layouts": len(self._layouts), "map": {},
                                   "layouts_per_rank": [len(indices) for indices, _, _ in shares]}
        for k, protocol in enumerate(self.protocols):
            values = map_summary(evaluations[protocol])
            summary["map"][protocol] = values
            stem = f"{self.prefix}/map_" if k == 0 else f"{self.prefix}/{protocol}/map_"
            for setting, splits in values.items():
                for split, value in splits.items():
                    if value is not None:
                        metrics[f"{stem}{setting}_{split}"] = value
        if self._metrics:
            pixels = reassemble(count, [(indices, images) for indices, _, images in shares])
            self._metrics.reset_fake()
            self._metrics.update_fake(torch.stack(pixels))
            values = self._metrics.compute()
            for key in ("fid", "kid_mean"):
                value = values.get(key)
                summary[key] = value
                if value is not None and value == value:
                    metrics[f"{self.prefix}/{key}"] = float(value)
        summary["seconds"] = round(time.perf_counter() - started, 3)
        out_dir = Path(trainer.default_root_dir) / self.output_subdir
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out_dir / f"step_{trainer.global_step:07d}.json", summary, allow_nan=True)
        self.history.append(summary)
        first = self.protocols[0]
        log.info(f"HOI eval at step {trainer.global_step} on {len(self._layouts)} layouts ({summary['seconds']:.1f} s): "
                 f"{first} default full {summary['map'][first]['default']['full']}")
        return metrics

    def run(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float]:
        """Draw and detect on every rank, score on rank 0, share the numbers with every rank, log them;
        returns them."""
        from .distributed import gather_to_rank_zero, share_errors

        self._last_step = trainer.global_step
        started = time.perf_counter()
        share, error = None, None
        try:
            share = self.draw_and_detect(trainer, pl_module)
        except Exception as failure:  # the other ranks must not wait for a share that never comes
            error = failure
        share_errors(trainer, error)
        shares = gather_to_rank_zero(trainer, share)
        metrics, failure = None, None
        if trainer.is_global_zero:
            try:
                metrics = self.evaluate(trainer, pl_module, shares, started)
            except Exception as error:  # the other ranks must not wait for numbers that never come
                failure = error
        shared = trainer.strategy.broadcast({"metrics": metrics, "error": repr(failure) if failure else None}, src=0)
        if failure is not None:
            raise failure
        if shared["error"]:
            raise RuntimeError(f"HOIEvalCallback failed on rank 0: {shared['error']}")
        metrics = shared["metrics"] or {}
        if metrics:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)
                if hasattr(logger, "log_eval_step") and self.last_evaluations is not None:
                    logger.log_eval_step(self.last_evaluations, trainer.global_step, self.prefix)
            trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})
        return metrics
