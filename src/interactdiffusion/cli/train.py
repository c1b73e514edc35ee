"""``interactdiffusion-train``: train the interaction module (Hydra overrides on the command line).

    interactdiffusion-train                                   # tiny backbone, synthetic data, CPU
    interactdiffusion-train experiment=paper/interactdiffusion paths.data_dir=/data paths.weights_dir=/weights
    interactdiffusion-train ... trainer=ddp trainer.devices=2  # one node, 2 GPUs
    interactdiffusion-train ... ckpt_path=last                # run the same command again to resume
    interactdiffusion-train ... train=false ckpt_path=<run dir> export=true   # export only

Composes the configs, builds the datamodule, the LightningModule, callbacks, loggers and trainer, and
calls ``trainer.fit``; everything else lives in ``interactdiffusion.training``.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from lightning.pytorch.callbacks import ProgressBar
from omegaconf import DictConfig, OmegaConf

from ..config_path import config_dir
from ..utils import (
    RankedLogger,
    extras,
    get_metric_value,
    instantiate_callbacks,
    instantiate_loggers,
    register_resolvers,
    task_wrapper,
)
from ..utils.task import user_errors

register_resolvers()
log = RankedLogger(__name__, rank_zero_only=True)


def _prepare_ddp_children(cfg: DictConfig) -> None:
    """Make processes that Lightning starts for DDP join this job's run directory.

    Lightning restarts ``sys.argv`` with ``hydra.run.dir`` = this run's directory. In a multirun the job
    directory is the sweep's, and ``sys.argv`` holds the whole sweep: hand the children this job's
    overrides and its directory instead.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        os.environ["INTERACTDIFFUSION_RUN_DIR"] = str(hydra_cfg.runtime.output_dir)
        sys.argv = [sys.argv[0], *hydra_cfg.overrides.task]


@task_wrapper
def train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train (and/or export); returns (metrics, the objects built) for tests and sweeps."""
    from ..training.checkpointing import AtomicCheckpointIO, load_module_weights, resolve_ckpt_path
    from ..training.export import export_trained
    from ..training.module import InteractDiffusionModule
    from ..training.progress import StepProgressBar
    from ..training.resumable_data import make_train_loader_resumable
    from ..training.safety_checkpoint import SafetyCheckpoint

    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)

    log.info(f"instantiating datamodule <{cfg.data._target_}>")
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")  # plain containers: checkpoints stay weights_only

    run_config = OmegaConf.to_container(cfg, resolve=True)
    trainable = cfg.get("trainable", "adapter")
    log.info(f"building the model: backbone={cfg.backbone.name} grounding={cfg.model.grounding.kind} trains the {trainable}")
    module = InteractDiffusionModule(
        backbone=cfg.backbone, model=cfg.model, recipe=cfg.recipe, run_config=run_config, trainable=trainable
    )

    order = cfg.get("data_order") or {}
    if order.get("resumable", True):
        make_train_loader_resumable(datamodule, seed=cfg.seed or 0, shuffle=order.get("shuffle"))

    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    if cfg.trainer.get("enable_progress_bar", True) and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(StepProgressBar())  # steps of the run, not batches of an epoch
    loggers = instantiate_loggers(cfg.get("logger"))
    _prepare_ddp_children(cfg)
    # every checkpoint file is written whole or not at all (a kill mid-write keeps the previous one)
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers, plugins=[AtomicCheckpointIO()]
    )
    for logger in trainer.loggers:
        logger.log_hyperparams({"config": run_config})

    group_dir = Path(cfg.paths.log_dir) / cfg.task_name / cfg.name
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), group_dir, cfg.paths.output_dir)
    if ckpt_path:  # a resumed run continues in its own run directory, next to its checkpoints
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")

    if cfg.get("train", True):
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        stopped_by = next((c.received for c in trainer.callbacks if isinstance(c, SafetyCheckpoint) and c.received), None)
        if stopped_by is not None:  # Ctrl-C / SIGTERM: the checkpoint is saved; no export, exit as interrupted
            raise SystemExit(128 + int(stopped_by))
    elif ckpt_path:
        load_module_weights(module, ckpt_path)
    metrics = {k: v for k, v in trainer.callback_metrics.items()}

    exported = None
    if cfg.get("export") and trainer.is_global_zero:
        exported = export_trained(module, Path(cfg.paths.output_dir) / "export", use_ema=cfg.get("export_use_ema", True))

    objects = {"cfg": cfg, "datamodule": datamodule, "module": module, "trainer": trainer, "exported": exported}
    return metrics, objects


EXIT_BAD_CONFIG = 2


class TrainConfigError(ValueError):
    """A setting that cannot work; reported with the setting's name before anything is built."""


def _positive_int(cfg: DictConfig, key: str) -> None:
    value = OmegaConf.select(cfg, key, default=None)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise TrainConfigError(f"setting '{key}' must be a positive integer, got {value!r}")


def check_config(cfg: DictConfig) -> str | None:
    """The settings a run would otherwise trip over after minutes of set-up (or in a traceback): the
    batch size, the recipe's types and ranges, the checkpoint to resume. Returns the resolved ckpt_path."""
    from ..training.checkpointing import resolve_ckpt_path
    from ..training.module import Recipe

    _positive_int(cfg, "data.batch_size")
    _positive_int(cfg, "data.num_val_images")
    recipe = OmegaConf.to_container(cfg.recipe, resolve=True) if cfg.get("recipe") is not None else {}
    defaults = Recipe()
    for key, value in recipe.items():
        default = getattr(defaults, key, None)
        if isinstance(default, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise TrainConfigError(f"setting 'recipe.{key}' must be a number, got {value!r}")
        if isinstance(default, int) and not isinstance(default, bool) and key != "seed" and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise TrainConfigError(f"setting 'recipe.{key}' must be a non-negative integer, got {value!r}")
    try:
        Recipe.from_mapping(recipe)
    except (TypeError, ValueError) as error:
        raise TrainConfigError(f"setting 'recipe': {error}") from None
    if isinstance(recipe.get("lr"), (int, float)) and not recipe["lr"] > 0:
        raise TrainConfigError(f"setting 'recipe.lr' must be positive, got {recipe['lr']!r}")
    group_dir = Path(cfg.paths.log_dir) / cfg.task_name / cfg.name
    try:
        return resolve_ckpt_path(cfg.get("ckpt_path"), group_dir, cfg.paths.output_dir)
    except FileNotFoundError as error:
        raise TrainConfigError(str(error)) from None


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    extras(cfg)
    try:
        check_config(cfg)
    except TrainConfigError as error:
        print(f"interactdiffusion-train: error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_CONFIG)
    try:
        metrics, _ = train(cfg)
    except user_errors() as error:
        print(f"interactdiffusion-train: error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_CONFIG)
    return get_metric_value(metrics, cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
