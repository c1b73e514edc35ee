"""Export a trained adapter: safetensors (+ JSON config) and a diffusers-format pipeline folder."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch

from ..atomic import folder_atomic
from ..utils.pylogger import RankedLogger

log = RankedLogger(__name__, rank_zero_only=True)


def export_trained(module, out_dir: str | Path, use_ema: bool = True, pipeline: bool = True) -> dict[str, Path]:
    """Write ``<out>/adapter.safetensors`` + ``adapter.json`` and ``<out>/pipeline/`` (diffusers layout).

    A module that trained the backbone itself writes ``<out>/backbone/`` instead: a diffusers-format
    backbone folder (``backbone.kind=diffusers backbone.path=<out>/backbone``).

    The exported weights are fp32 whatever precision trained them. With an EMA kept and ``use_ema``
    the averaged weights are exported.

    ``<out>`` is published whole (``atomic.folder_atomic``): a kill during an export leaves the
    previous export or none, never a new adapter beside an old pipeline.
    """
    out = Path(out_dir)
    with folder_atomic(out) as staging:
        written = _export_into(module, staging, use_ema, pipeline)
    written = {k: out / v.relative_to(staging) for k, v in written.items()}
    log.info("exported " + ", ".join(f"{k}: {v}" for k, v in written.items()))
    return written


def _export_into(module, out: Path, use_ema: bool, pipeline: bool) -> dict[str, Path]:
    from ..models.checkpoints import save_adapter
    from ..pipeline import InteractDiffusionPipeline

    ema = getattr(module, "ema", None) if use_ema else None
    was_training = module.training
    module.float()  # frozen parts may be half under mixed precision; exports are fp32
    written: dict[str, Path] = {}
    if getattr(module, "trainable", "adapter") == "backbone":
        from ..models.backbone import save_backbone

        with torch.no_grad(), (ema.swapped_in() if ema is not None else nullcontext()):
            written["backbone"] = save_backbone(module.backbone, out / "backbone")
        module.train(was_training)
        return written
    grounding = dict(module.hparams.model.get("grounding") or {})
    with torch.no_grad(), (ema.swapped_in() if ema is not None else nullcontext()):
        written["adapter"] = save_adapter(module.unet, out / "adapter", config=grounding)
        if pipeline:
            pipe = InteractDiffusionPipeline.from_backbone(module.backbone)
            pipe.save_pretrained(out / "pipeline")
            written["pipeline"] = out / "pipeline"
    module.train(was_training)
    return written
