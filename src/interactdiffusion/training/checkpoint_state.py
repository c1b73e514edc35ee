"""What a training checkpoint holds besides Lightning's own state, and the check that it fits the run.

Checkpoints keep the trained entries only (the adapter, or the UNet with ``trainable=backbone``), the
resume state (data position, batches seen, RNG streams, EMA) and the run's resolved config, all as plain
containers so the file loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .seeding import capture_rng_state, restore_rng_state

CHECKPOINT_KEY = "interactdiffusion"
CHECKPOINT_FORMAT_VERSION = 1


class CheckpointMismatchError(ValueError):
    """A checkpoint whose adapter does not fit this run's backbone or adapter variant."""


def _plain(value: Any) -> Any:
    """OmegaConf containers (or anything mapping/sequence-like) as plain dicts and lists."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class AdapterCheckpointState:
    """Lightning's checkpoint hooks of ``InteractDiffusionModule`` (a mixin: it reads the module's
    ``adapter_keys``, ``backbone``, ``trainable``, ``ema``, ``hparams`` and resume counters)."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep only the adapter; add what an exact resume needs and the run's resolved config."""
        state = checkpoint.get("state_dict", {})
        checkpoint["state_dict"] = {k: v for k, v in state.items() if k in self.adapter_keys}
        for key in ("hyper_parameters", "datamodule_hyper_parameters"):
            if key in checkpoint:  # plain containers only, so the file loads with weights_only=True
                checkpoint[key] = _plain(checkpoint[key])
        checkpoint[CHECKPOINT_KEY] = {
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "backbone": self.backbone.name,
            "num_trainable": self.num_trainable,
            "data_position": list(self._data_position),
            "batches_seen": self._batches_seen,
            "rng": capture_rng_state(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "config": self.run_config,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("state_dict", {})
        checkpoint["state_dict"] = self.check_adapter_state(state, checkpoint.get("hyper_parameters"))
        extra = checkpoint.get(CHECKPOINT_KEY) or {}
        if extra.get("data_position"):
            self._data_position = tuple(int(v) for v in extra["data_position"])
        self._batches_seen = int(extra.get("batches_seen", 0))
        if extra.get("rng"):
            restore_rng_state(extra["rng"])
        if self.ema is not None and extra.get("ema"):
            self.ema.load_state_dict(extra["ema"])

    def check_adapter_state(
        self, state: Mapping[str, torch.Tensor], saved_hparams: Mapping[str, Any] | None = None
    ) -> dict[str, torch.Tensor]:
        """The trained entries of ``state`` after checking they fit this model; a clear error if not."""
        saved_trainable = (saved_hparams or {}).get("trainable", "adapter") if isinstance(saved_hparams, Mapping) else "adapter"
        if saved_trainable != self.trainable:
            raise CheckpointMismatchError(
                f"the checkpoint trained the {saved_trainable}, this run trains the {self.trainable}: "
                "resume with the same `trainable=`"
            )
        if self.trainable == "backbone":
            return self._check_backbone_state(state)
        own = {k: v.shape for k, v in self.state_dict().items() if k in self.adapter_keys}
        adapter = {k: v for k, v in state.items() if k in own}
        foreign = sorted(k for k in state if k not in own and (".fuser." in k or ".position_net." in k))
        missing = sorted(set(own) - set(adapter))
        mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs this model {tuple(own[k])}" for k, v in adapter.items()
                      if tuple(v.shape) != tuple(own[k])]
        if not (foreign or missing or mismatched):
            return adapter
        saved_backbone = (saved_hparams or {}).get("backbone", {}) if isinstance(saved_hparams, Mapping) else {}
        saved_model = (saved_hparams or {}).get("model", {}) if isinstance(saved_hparams, Mapping) else {}
        lines = ["the checkpoint's adapter does not fit this model (a different backbone shape or adapter variant)"]
        lines.append(
            f"  checkpoint: backbone={saved_backbone.get('name', '?')} "
            f"grounding={(saved_model.get('grounding') or {}).get('kind', '?')}; "
            f"this run: backbone={self.backbone.name} "
            f"grounding={(self.hparams.model.get('grounding') or {}).get('kind', '?')}"
        )
        if mismatched:
            lines.append(f"  {len(mismatched)} shape mismatches, e.g. " + "; ".join(mismatched[:3]))
        if missing:
            lines.append(f"  {len(missing)} adapter weights missing from the checkpoint, e.g. {missing[:3]}")
        if foreign:
            lines.append(f"  {len(foreign)} adapter weights this model does not have, e.g. {foreign[:3]}")
        lines.append("  use the same backbone=/model= as the run that wrote the checkpoint")
        raise CheckpointMismatchError("\n".join(lines))

    def _check_backbone_state(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        own = {k: v.shape for k, v in self.state_dict().items() if k in self.adapter_keys}
        missing = sorted(set(own) - set(state))
        mismatched = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k])]
        if missing or mismatched:
            raise CheckpointMismatchError(
                f"the checkpoint's UNet does not fit this backbone config: {len(missing)} weights missing "
                f"(e.g. {missing[:3]}), {len(mismatched)} of another shape (e.g. {mismatched[:3]})"
            )
        return {k: state[k] for k in own}
