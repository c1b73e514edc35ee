"""Callbacks: throughput/memory monitoring and the periodic grid of generated images."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer
from PIL import Image

from ..atomic import write_file_atomic
from ..scene import Scene
from ..utils.pylogger import RankedLogger

log = RankedLogger(__name__, rank_zero_only=True)


class TrainingMonitor(Callback):
    """Logs samples/s (all processes together), seconds per optimiser step and, on a GPU, peak memory.

    Times are measured between consecutive optimiser steps, so data loading and all-reduce are
    included: it is the throughput a run actually gets.
    """

    def __init__(self, log_memory: bool = True):
        self.log_memory = log_memory
        self._last_time: float | None = None
        self._last_step = -1
        self._samples = 0

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._last_time = time.perf_counter()
        self._last_step = trainer.global_step
        self._samples = 0
        if self.log_memory and pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        self._samples += _batch_size(batch)
        if trainer.global_step == self._last_step:
            return  # still accumulating
        now = time.perf_counter()
        elapsed = now - (self._last_time or now)
        steps = trainer.global_step - self._last_step
        metrics: dict[str, float] = {}
        if elapsed > 0:
            metrics["train/samples_per_s"] = self._samples * trainer.world_size / elapsed
            metrics["train/step_time_s"] = elapsed / steps
        if self.log_memory and pl_module.device.type == "cuda":
            gib = 2**30
            metrics["gpu/max_memory_allocated_gib"] = torch.cuda.max_memory_allocated(pl_module.device) / gib
            metrics["gpu/memory_reserved_gib"] = torch.cuda.memory_reserved(pl_module.device) / gib
        if metrics:
            pl_module.log_dict(metrics, on_step=True, on_epoch=False, batch_size=max(1, self._samples))
        self._last_time, self._last_step, self._samples = now, trainer.global_step, 0


def _batch_size(batch: Any) -> int:
    if isinstance(batch, dict) and "captions" in batch:
        return len(batch["captions"])
    return 1


def _to_pil(image: Any) -> Image.Image:
    """A [3,H,W] tensor in [-1,1] or [0,1] (or a PIL image) as a PIL image."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    tensor = torch.as_tensor(image).detach().float().cpu()
    if tensor.min() < 0:
        tensor = (tensor + 1) / 2
    array = (tensor.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(array)


def image_grid(rows: list[list[Image.Image]], pad: int = 4, background=(255, 255, 255)) -> Image.Image:
    """Paste images row by row; every cell takes the size of the largest image."""
    cell_w = max(im.width for row in rows for im in row)
    cell_h = max(im.height for row in rows for im in row)
    cols = max(len(row) for row in rows)
    grid = Image.new("RGB", (cols * cell_w + (cols + 1) * pad, len(rows) * cell_h + (len(rows) + 1) * pad), background)
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            grid.paste(im, (pad + c * (cell_w + pad), pad + r * (cell_h + pad)))
    return grid


class ImageGridCallback(Callback):
    """Every ``every_n_steps`` optimiser steps (and at the end): generate images for a fixed set of
    validation scenes (shared over the ranks of a DDP run), draw their boxes and triplets, put the real image beside, and write
    the grid as ``<run>/samples/step_XXXXXXX.png`` and to wandb / TensorBoard if those loggers are on.

    The loss says little about whether boxes are obeyed (REFERENCE §2), so these grids are the
    quickest signal of progress. Scenes come from ``datamodule.val_scenes(num_scenes)``.
    """

    def __init__(
        self,
        every_n_steps: int = 5000,
        num_scenes: int = 4,
        num_inference_steps: int = 25,
        guidance_scale: float = 7.5,
        scheduled_sampling_beta: float = 1.0,
        scheduler: str = "plms",
        seed: int = 489,
        at_start: bool = False,
        at_end: bool = True,
        use_ema: bool = True,
        output_subdir: str = "samples",
        image_size: int | None = None,
    ):
        if every_n_steps <= 0:
            raise ValueError(f"every_n_steps must be positive, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.num_scenes = num_scenes
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.beta = scheduled_sampling_beta
        self.scheduler = scheduler
        self.seed = seed
        self.at_start = at_start
        self.at_end = at_end
        self.use_ema = use_ema
        self.output_subdir = output_subdir
        self.image_size = image_size
        self._scenes: list[tuple[Scene, Any]] | None = None
        self._last_logged_step = -1
        self.written: list[Path] = []

    # -- hooks -------------------------------------------------------------------------------------
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.at_start and trainer.global_step == 0:
            self.log_grid(trainer, pl_module)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if step > 0 and step % self.every_n_steps == 0 and step != self._last_logged_step:
            self.log_grid(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.at_end and trainer.global_step != self._last_logged_step and not trainer.sanity_checking:
            self.log_grid(trainer, pl_module)

    # -- the grid ----------------------------------------------------------------------------------
    def scenes(self, trainer: Trainer) -> list[tuple[Scene, Any]]:
        if self._scenes is None:
            datamodule = trainer.datamodule
            if datamodule is None or not hasattr(datamodule, "val_scenes"):
                self._scenes = []
            else:
                self._scenes = [(s, img) for s, img in datamodule.val_scenes(self.num_scenes) if s.interactions]
        return self._scenes

    def log_grid(self, trainer: Trainer, pl_module: LightningModule) -> Path | None:
        """Every rank draws its share of the scenes (``training.distributed``); rank 0 writes the grid."""
        from .distributed import gather_to_rank_zero, rank_share, reassemble, share_errors

        self._last_logged_step = trainer.global_step
        scenes = self.scenes(trainer)
        if not scenes:
            log.warning("image grid: the datamodule offers no validation scenes; nothing drawn")
            return None
        started = time.perf_counter()
        mine, images, error = rank_share(trainer, len(scenes)), [], None
        try:
            if mine:
                images = self.generate(trainer, pl_module, [scenes[k][0] for k in mine])
        except Exception as failure:  # the other ranks must not wait for images that never come
            error = failure
        share_errors(trainer, error)
        shares = gather_to_rank_zero(trainer, (mine, images))
        if not trainer.is_global_zero:
            return None
        generated = reassemble(len(scenes), shares)
        from ..visualize import draw_scene

        rows = []
        for (scene, real), fake in zip(scenes, generated):
            rows.append([draw_scene(fake, scene), draw_scene(_to_pil(real), scene)])
        grid = image_grid(rows)
        step = trainer.global_step
        out_dir = Path(trainer.default_root_dir) / self.output_subdir
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"step_{step:07d}.png"
        write_file_atomic(path, lambda tmp: grid.save(tmp, format="PNG"))
        self.written.append(path)
        captions = [f"{s.id}: {s.caption}" for s, _ in scenes]
        self._send_to_loggers(trainer, grid, step, captions, samples=(scenes, generated))
        log.info(f"image grid of {len(scenes)} scenes at step {step} -> {path} ({time.perf_counter() - started:.1f}s)")
        return path

    @torch.no_grad()
    def generate(self, trainer: Trainer, pl_module: LightningModule, scenes: list[Scene]) -> list[Image.Image]:
        from ..generation.building import module_pipeline
        from ..generation.sampling import call_pipeline
        from ..generation.scenes import at_size

        size = self.image_size or int(pl_module.hparams.backbone.get("resolution") or 512)
        with module_pipeline(trainer, pl_module, self.scheduler, self.use_ema) as pipe:
            return call_pipeline(
                pipe, [at_size(s, size) for s in scenes], (size, size), steps=self.num_inference_steps,
                guidance_scale=self.guidance_scale, beta=self.beta, seed=self.seed, output_type="pil",
            ).images

    @staticmethod
    def _send_to_loggers(trainer: Trainer, grid: Image.Image, step: int, captions: list[str], samples=None) -> None:
        from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

        caption = " | ".join(captions)
        for logger in trainer.loggers:
            if samples is not None and hasattr(logger, "log_samples"):  # native box overlays (dashboards.logger)
                scenes, generated = samples
                logger.log_samples([s for s, _ in scenes], generated, [_to_pil(real) for _, real in scenes], step)
            elif isinstance(logger, WandbLogger):
                logger.log_image(key="samples/grid", images=[grid], step=step, caption=[caption])
            elif isinstance(logger, TensorBoardLogger):
                import numpy as np

                logger.experiment.add_image("samples/grid", np.asarray(grid), step, dataformats="HWC")

