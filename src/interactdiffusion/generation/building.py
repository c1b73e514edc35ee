"""The pipeline a generation runs on: from a backbone config + weights (generate, eval, the app) or from
a training module's own backbone (the callbacks); and the phrases embedded once before any image."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..scene import MAX_INTERACTIONS, Scene
from .scenes import scene_phrases
from .settings import InputError, Settings

log = logging.getLogger("interactdiffusion.generation")


class PipelineError(Exception):
    """The backbone or weights could not be loaded; ``setting`` names the culprit when it is not them."""

    def __init__(self, message: str, setting: str | None = None):
        super().__init__(message)
        self.setting = setting


def load_generation_pipeline(backbone_spec: dict[str, Any], grounding: dict[str, Any] | None, weights: str | None,
                             *, precision: str, device: str, scheduler: str,
                             scheduler_kwargs: dict[str, Any] | None = None):
    """The pipeline for a backbone spec (``configs/backbone``) + weights, with ``scheduler`` set up from
    the loaded scheduler's config; progress bars off (the callers report progress themselves)."""
    from ..models.backbone import BackboneError, build_backbone
    from ..models.checkpoints import CheckpointError
    from ..pipeline import load_pipeline, make_scheduler

    def backbone():
        return build_backbone(**backbone_spec, grounding=dict(grounding or {}) or None)

    try:
        pipe, what = load_pipeline(backbone, weights, scheduler="plms", precision=precision, device=device)
    except (BackboneError, CheckpointError, FileNotFoundError) as error:
        raise PipelineError(str(error)) from None
    try:
        pipe.scheduler = make_scheduler(scheduler, dict(pipe.scheduler.config), **(scheduler_kwargs or {}))
    except ValueError as error:
        raise PipelineError(str(error), setting="scheduler") from None
    pipe.set_progress_bar_config(disable=True)
    log.info("loaded %s; scheduler %s, %s on %s", what, type(pipe.scheduler).__name__, precision, device)
    return pipe


def build_pipeline(cfg: DictConfig, settings: Settings):
    """The pipeline of a ``generate.yaml`` config and its checked settings (the CLI and the app)."""
    try:
        return load_generation_pipeline(
            OmegaConf.to_container(cfg.backbone, resolve=True), settings.grounding, settings.weights,
            precision=settings.precision, device=settings.device, scheduler=settings.scheduler,
            scheduler_kwargs=settings.scheduler_kwargs,
        )
    except PipelineError as error:
        raise InputError(f"setting {error.setting!r}: {error}" if error.setting else str(error)) from None


@contextlib.contextmanager
def module_pipeline(trainer, pl_module, scheduler: str, use_ema: bool = True) -> Iterator[Any]:
    """A pipeline on a training module's own backbone, run under the trainer's autocast (under mixed
    precision the frozen weights are half) with the EMA weights swapped in when asked; the module's
    train/eval mode is restored afterwards."""
    from ..pipeline import InteractDiffusionPipeline

    was_training = pl_module.training
    ema = getattr(pl_module, "ema", None) if use_ema else None
    try:
        pipe = InteractDiffusionPipeline.from_backbone(pl_module.backbone, scheduler=scheduler)
        pipe.set_progress_bar_config(disable=True)
        context = trainer.precision_plugin.forward_context() if trainer is not None else contextlib.nullcontext()
        with context, (ema.swapped_in() if ema is not None else contextlib.nullcontext()):
            yield pipe
    finally:
        pl_module.train(was_training)


def adopt_loaded_adapter(settings: Settings, pipe, scenes: Sequence[Scene], truncate: bool) -> Settings:
    """The settings with the grounding block of the adapter actually loaded (a GLIGEN adapter is recorded
    as GLIGEN whatever ``model=`` said), after checking every scene against *its* interaction limit
    (4 for the HOI-Shapes adapters, not the config's 30): an error naming the scene, or with
    ``truncate=true`` a warning (the pipeline keeps the first ones)."""
    from ..pipeline import grounding_config_of

    position_net = pipe.unet.position_net
    limit = int(getattr(position_net, "max_interactions", MAX_INTERACTIONS))
    for scene in scenes:
        if len(scene.interactions) > limit:
            message = (f"scene {scene.id!r}, field 'interactions': {len(scene.interactions)} interactions; the "
                       f"loaded adapter ({settings.weights or settings.backbone}) takes at most {limit}")
            if not truncate:
                raise InputError(message + " (truncate=true keeps the first ones with a warning)")
            log.warning("%s; only the first %d are used", message, limit)
    return replace(settings, grounding=grounding_config_of(position_net))


def prepare_phrases(pipe, cfg: DictConfig, scenes: Sequence[Scene]) -> None:
    """Embed every phrase of the job once, before any image: embeddings never depend on batching.

    ``phrase_cache``: a file in the training cache's format (``data/phrase_cache.py``; the official
    ``clip_phrases_feature_cache.pth`` is read too), or a folder, where the file is named by the text
    encoder's fingerprint exactly as training's ``recipe.phrase_cache_dir`` names it.
    """
    from ..data.phrase_cache import PhraseCacheError, phrase_cache_file, read_phrase_table, write_phrase_table
    from ..models.backbone import module_fingerprint

    cache = cfg.get("phrase_cache")
    path = Path(cache).expanduser() if cache else None
    fingerprint = module_fingerprint(pipe.phrase_encoder.text_encoder) if path else None  # both encoders for XL
    if path is not None and (path.is_dir() or not path.suffix):
        path = phrase_cache_file(path, fingerprint)
    if path is not None and path.is_file():
        try:
            pipe.preload_phrases(read_phrase_table(path, fingerprint))
        except (PhraseCacheError, ValueError) as error:
            raise InputError(f"setting 'phrase_cache': {error}") from None
    known = set(pipe.phrase_table())
    missing = [p for p in scene_phrases(scenes) if p not in known]
    if missing:
        log.info("embedding %d phrases", len(missing))
        pipe.encode_phrases(missing)
    if path is not None and (missing or not path.is_file()):
        write_phrase_table(path, pipe.phrase_table(), fingerprint)
