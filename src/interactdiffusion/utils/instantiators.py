"""Build callbacks and loggers from their config groups (each entry with a ``_target_``)."""

from __future__ import annotations

import hydra
from lightning import Callback
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

from .pylogger import RankedLogger

log = RankedLogger(__name__, rank_zero_only=True)


def _instantiate_group(cfg: DictConfig | None, kind: str) -> list:
    objects: list = []
    if not cfg:
        return objects
    if not isinstance(cfg, DictConfig):
        raise TypeError(f"the {kind} config must be a mapping of name -> config, got {type(cfg).__name__}")
    for name, entry in cfg.items():
        if isinstance(entry, DictConfig) and "_target_" in entry:
            log.info(f"instantiating {kind} {name} <{entry._target_}>")
            objects.append(hydra.utils.instantiate(entry))
    return objects


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    return _instantiate_group(cfg, "callback")


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    return _instantiate_group(cfg, "logger")
