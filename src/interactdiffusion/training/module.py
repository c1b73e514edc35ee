"""The LightningModule that trains the interaction module on a frozen Stable Diffusion.

It receives plain configs (the backbone's, the adapter's and the training recipe), builds and freezes
the backbone itself, and keeps only the adapter (fusers + ``position_net``) trainable. Checkpoints hold
the adapter, the optimiser/scheduler/loop state, the EMA and the resolved run config: never the
backbone, which is rebuilt from its config.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.optimization import get_constant_schedule_with_warmup
from lightning import LightningModule
from torch import nn

from ..conditioning import GroundingIds, drop_grounding, grounding_kwargs
from ..models.backbone import Backbone, build_backbone
from ..models.unet import adapter_state_dict, is_adapter_key
from ..utils.pylogger import RankedLogger
from .checkpoint_state import (
    CHECKPOINT_FORMAT_VERSION,
    CHECKPOINT_KEY,
    AdapterCheckpointState,
    CheckpointMismatchError,
    _plain,
)
from .ema import AdapterEMA
from .fsdp_scalars import average_scalar_grads, exclude_scalars_from_fsdp
from .optimizers import build_optimizer, optimizer_param_groups
from .resumable_data import POSITION_KEY, ResumableLoader
from .seeding import generator, mix_seed, sample_generators

log = RankedLogger(__name__, rank_zero_only=True)

TRAINABLE = ("adapter", "backbone")
MIXED_DTYPES = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}

__all__ = [  # the checkpoint names moved to ``checkpoint_state``; importing them from here still works
    "CHECKPOINT_FORMAT_VERSION", "CHECKPOINT_KEY", "MIXED_DTYPES", "TRAINABLE", "CheckpointMismatchError",
    "InteractDiffusionModule", "Recipe",
]


@dataclass
class Recipe:
    """The training recipe; the defaults are the paper's (REFERENCE §2)."""

    lr: float = 5e-5
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 10_000
    caption_drop_prob: float = 0.5
    grounding_drop_prob: float = 0.1
    grounding_drop_per_sample: bool = False
    ema_decay: float | None = None
    gradient_checkpointing: bool = False
    timestep_power: float = 1.0
    seed: int = 0
    phrase_cache_dir: str | None = None
    optimizer: str = "adamw"  # or adamw_8bit (bitsandbytes, CUDA): training/optimizers.py
    gate_lr_scale: float = 1.0  # the fusers' scalar gates (alpha_attn, alpha_dense) learn this many times faster

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> Recipe:
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown recipe keys {unknown}; known: {sorted(known)}")
        if "betas" in values:
            values["betas"] = tuple(float(b) for b in values["betas"])
        recipe = cls(**values)
        if recipe.timestep_power <= 0:
            raise ValueError(f"recipe.timestep_power must be positive, got {recipe.timestep_power}")
        if recipe.gate_lr_scale <= 0:
            raise ValueError(f"recipe.gate_lr_scale must be positive, got {recipe.gate_lr_scale}")
        for name in ("caption_drop_prob", "grounding_drop_prob"):
            if not 0.0 <= getattr(recipe, name) <= 1.0:
                raise ValueError(f"recipe.{name} must be in [0, 1], got {getattr(recipe, name)}")
        return recipe


class InteractDiffusionModule(AdapterCheckpointState, LightningModule):
    """Epsilon-prediction training of the adapter; see ``Recipe`` for the knobs.

    ``backbone``: a ``configs/backbone`` group (``kind``, ``path`` or tiny sizes); ``model``: a
    ``configs/model`` group (``grounding`` and ``init_from``); ``recipe``: ``Recipe`` fields;
    ``run_config``: the resolved run config, stored in checkpoints for provenance (not a hyper-parameter).
    ``trainable``: ``adapter`` (the interaction module on a frozen SD: the paper) or ``backbone`` (the
    UNet itself from captions alone, fusers off, no grounding: how the HOI-Shapes "Stable Diffusion"
    is pre-trained before its adapters).
    """

    def __init__(
        self,
        backbone: Mapping[str, Any],
        model: Mapping[str, Any],
        recipe: Mapping[str, Any] | None = None,
        run_config: Mapping[str, Any] | None = None,
        trainable: str = "adapter",
    ):
        super().__init__()
        if trainable not in TRAINABLE:
            raise ValueError(f"trainable must be one of {TRAINABLE}, got {trainable!r}")
        self.trainable = trainable
        warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
        # the datamodule offers validation batches for other tools; this module has no validation loop
        warnings.filterwarnings("ignore", message=r".*passed in a `val_dataloader` but have no `validation_step`.*")
        backbone_cfg, model_cfg = _plain(backbone), _plain(model)
        self.recipe = Recipe.from_mapping(_plain(recipe))
        self.save_hyperparameters(
            {"backbone": backbone_cfg, "model": model_cfg, "recipe": _plain(asdict(self.recipe)), "trainable": trainable}
        )
        self.run_config = _plain(run_config) if run_config is not None else None
        self.strict_loading = False  # checkpoints hold the adapter only; on_load_checkpoint checks it

        parts: Backbone = build_backbone(**backbone_cfg, grounding=model_cfg.get("grounding"))
        self.num_trainable = parts.freeze() if trainable == "adapter" else parts.unfreeze_unet()
        self.backbone = parts  # a plain attribute: its modules are registered just below
        self.unet = parts.unet
        self.vae = parts.vae
        self.text_encoder = parts.text_encoder
        self.text_encoder_2 = getattr(parts, "text_encoder_2", None)  # SDXL's bigG (models/sdxl.py)
        self.noise_scheduler = parts.scheduler
        # What checkpoints keep: the adapter, or the trained UNet (whose adapter stays fresh and unused).
        self.adapter_keys = frozenset(
            f"unet.{k}" for k in (adapter_state_dict(self.unet) if trainable == "adapter" else
                                  {k for k, _ in self.unet.named_parameters() if not is_adapter_key(k)})
        )
        self.num_frozen = sum(p.numel() for p in self.parameters() if not p.requires_grad)
        if self.recipe.gradient_checkpointing:
            # diffusers >= 0.32 checkpoints with use_reentrant=False, which DDP supports.
            self.unet.enable_gradient_checkpointing()

        self.init_report: str | None = None
        init_from = model_cfg.get("init_from")
        if init_from:
            self.init_report = self._initialise_adapter(str(init_from))

        self.register_buffer("phrase_table", torch.zeros(0, parts.phrase_dim), persistent=False)
        self._table_phrases: list[str] | None = None
        self.ema = AdapterEMA(self.trainable_named_parameters(), self.recipe.ema_decay) if self.recipe.ema_decay else None
        self._data_position: tuple[int, int] = (0, 0)
        self._batches_seen = 0  # micro-batches trained on so far: the key of each step's randomness

    # -- the adapter -------------------------------------------------------------------------------
    def trainable_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def _initialise_adapter(self, path: str) -> str:
        from ..models.checkpoints import load_adapter_into

        missing = load_adapter_into(self.unet, path, strict=False, seed=self.recipe.seed)
        message = f"adapter initialised from {path}"
        if missing:
            message += f" ({len(missing)} adapter keys absent there keep their fresh values, e.g. {missing[:3]})"
        log.info(message)
        return message

    # -- set-up ------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        index = getattr(datamodule, "phrase_index", None)
        if index is not None and len(index) and list(index.phrases) != self._table_phrases:
            self.set_phrase_table(self._compute_phrase_table(list(index.phrases)))
            self._table_phrases = list(index.phrases)
        self._cast_frozen_to_compute_dtype()

    def _compute_phrase_table(self, phrases: list[str]) -> torch.Tensor:
        """Pooled CLIP embeddings of the datamodule's phrases; rank 0 fills the on-disk cache first."""
        from ..data.phrase_cache import load_or_compute_phrase_table

        encoder = self.backbone.phrase_encoder()
        cache_dir = self.recipe.phrase_cache_dir
        if not cache_dir:
            return encoder(phrases)
        if self.trainer.world_size > 1:  # one process writes the cache, the others then read it
            if self.trainer.is_global_zero:
                load_or_compute_phrase_table(phrases, encoder, cache_dir)
            self.trainer.strategy.barrier("phrase_table")
        return load_or_compute_phrase_table(phrases, encoder, cache_dir)

    def set_phrase_table(self, table: torch.Tensor) -> None:
        """Phrase embeddings [P, D] indexed by the batch's phrase ids (``datamodule.phrase_index``)."""
        dim = self.backbone.phrase_dim
        if table.dim() != 2 or table.shape[1] != dim:
            raise ValueError(f"phrase table must be [P, {dim}] for this text encoder, got {tuple(table.shape)}")
        self.phrase_table = table.detach().float().to(self.phrase_table.device)

    def compute_dtype(self) -> torch.dtype:
        precision = str(self.trainer.precision) if self._trainer is not None else "32-true"
        return MIXED_DTYPES.get(precision, torch.float32)

    def _cast_frozen_to_compute_dtype(self) -> None:
        """Under mixed precision keep SD's frozen weights in the compute dtype (half the memory, no
        per-step casts); the adapter stays fp32 for the optimiser."""
        dtype = self.compute_dtype()
        if dtype == torch.float32:
            return
        for module in self.backbone.frozen_encoders():
            module.to(dtype)
        for param in self.unet.parameters():
            if not param.requires_grad:
                param.data = param.data.to(dtype)

    def train(self, mode: bool = True) -> InteractDiffusionModule:
        """The VAE and text encoder are feature extractors: they stay in eval mode while training
        (Lightning's notice about modules in eval mode is silenced in ``__init__`` for that reason)."""
        super().train(mode)
        for module in self.backbone.frozen_encoders():
            module.eval()
        return self

    def on_fit_start(self) -> None:
        if self.ema is not None:
            self.ema.to(self.device)
        if self.init_report:
            log.info(self.init_report)

    def on_train_start(self) -> None:
        loader = self.trainer.train_dataloader
        if isinstance(loader, ResumableLoader):
            loader.position_provider = self.data_position
            limit = self.trainer.num_training_batches
            loader.epoch_limit = int(limit) if limit != float("inf") else None
        counts = {"params/trainable": float(self.num_trainable), "params/frozen": float(self.num_frozen)}
        log.info(f"trainable parameters: {self.num_trainable:,}; frozen: {self.num_frozen:,}")
        for logger in self.loggers:
            logger.log_metrics(counts, step=self.global_step)

    def data_position(self) -> tuple[int, int]:
        """(epoch, batches the training step consumed in it): where a resumed run continues."""
        return self._data_position

    # -- encoders (frozen, no grad) ------------------------------------------------------------------
    @torch.no_grad()
    def text_conditions(self, captions: list[str], batch: Mapping[str, Any], latents: torch.Tensor) -> dict[str, Any]:
        """The UNet's caption inputs; SDXL adds ``added_cond_kwargs`` with the batch's ``time_ids``
        (the recipe's crop) or, where the data has none, uncropped images at the training size."""
        size = tuple(int(d) * self.backbone.vae_scale_factor for d in latents.shape[-2:])
        return self.backbone.unet_text_conditions(captions, self.device, time_ids=batch.get("time_ids"), size=size)

    @torch.no_grad()
    def latent_distribution(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of the VAE posterior, from the latent cache or by encoding the images."""
        if "latent_mean" in batch:
            return batch["latent_mean"].float(), batch["latent_std"].float()
        pixels = batch["pixel_values"].to(self.device, self.vae.dtype)
        dist = self.vae.encode(pixels).latent_dist
        return dist.mean.float(), dist.std.float()

    # -- the training step ---------------------------------------------------------------------------
    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        with self.step_randomness(("batch", self._batches_seen)):
            loss, stats = self.compute_loss(batch, step_key=("batch", self._batches_seen))
        self._batches_seen += 1
        if POSITION_KEY in batch:
            self._data_position = tuple(batch[POSITION_KEY])
        size = len(batch["captions"])
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=size)
        self.log("train/loss_avg", loss, on_step=False, on_epoch=True, batch_size=size, sync_dist=True)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False, batch_size=size)
        self.log_dict(
            {f"train/{k}": v for k, v in stats.items()}, on_step=True, on_epoch=False, batch_size=size
        )
        return loss

    def compute_loss(
        self, batch: Mapping[str, Any], step_key: tuple[Any, ...] = (0, 0)
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The epsilon-MSE loss of one batch; every random draw is keyed by ``step_key`` and scene id."""
        recipe = self.recipe
        captions: list[str] = list(batch["captions"])
        scene_ids = [str(s) for s in batch["scene_ids"]]
        size = len(captions)
        device = self.device
        gens = sample_generators(recipe.seed, step_key, scene_ids, device)

        steps = self.noise_scheduler.config.num_train_timesteps
        timesteps = self.sample_timesteps(gens, steps, device)
        caption_u = torch.cat([torch.rand(1, generator=g, device=device) for g in gens])
        grounding_u = torch.cat([torch.rand(1, generator=g, device=device) for g in gens])

        mean, std = self.latent_distribution(batch)
        mean, std = mean.to(device), std.to(device)
        shape = mean.shape[1:]
        posterior_eps = torch.stack([torch.randn(shape, generator=g, device=device) for g in gens])
        noise = torch.stack([torch.randn(shape, generator=g, device=device) for g in gens])
        latents = (mean + std * posterior_eps) * self.backbone.latent_scaling

        has_interaction = torch.as_tensor(batch["has_interaction"], device=device, dtype=torch.bool)
        drop_caption = (caption_u < recipe.caption_drop_prob) & has_interaction
        captions = ["" if drop else c for c, drop in zip(captions, drop_caption.tolist())]
        if recipe.grounding_drop_per_sample:
            drop_ground = grounding_u < recipe.grounding_drop_prob
        else:  # one decision per (global) batch, the same on every rank
            batch_u = torch.rand(1, generator=generator(mix_seed(recipe.seed, *step_key, "batch"), device), device=device)
            drop_ground = (batch_u < recipe.grounding_drop_prob).expand(size)

        text = self.text_conditions(captions, batch, latents)
        if self.trainable == "adapter":
            ids: GroundingIds = batch["grounding"]
            grounding = drop_grounding(grounding_kwargs(ids.to(device), self.phrase_table), drop_ground)
            extra = {"cross_attention_kwargs": {"gligen": grounding}}
        else:  # captions only: no grounding tokens reach the (disabled) fusers
            drop_ground = torch.ones(size, dtype=torch.bool, device=device)
            extra = {}

        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)  # diffusers' forward process
        prediction = self.unet(noisy, timesteps, **text, **extra).sample
        loss = F.mse_loss(prediction.float(), self.target(latents, noise, timesteps), reduction="mean")
        stats = {
            "caption_dropped": drop_caption.float().mean().detach(),
            "grounding_dropped": drop_ground.float().mean().detach(),
        }
        return loss, stats

    @contextmanager
    def step_randomness(self, step_key: tuple[Any, ...]):
        """The global streams inside one step's forward pass, without touching anybody else's.

        Every draw of ``compute_loss`` comes from its own per-sample generators; only dropout (none in
        SD 1.x, but the adapter or another backbone may have some) must use the global stream, which
        cannot take a generator. So the forward runs inside ``fork_rng`` seeded by (seed, step, rank):
        the stream is fixed per step, and user code and other callbacks see their own streams go on
        as if the step had not happened. Gradient checkpointing re-runs the forward with the state it
        stashed, so the recomputation draws the same masks.
        """
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            seed = mix_seed(self.recipe.seed, *step_key, "dropout", self.global_rank)
            torch.manual_seed(seed)
            yield

    def sample_timesteps(self, gens: list[torch.Generator], steps: int, device) -> torch.Tensor:
        """One training timestep per sample from its own generator: uniform (the paper), or
        ``t = T * u^p`` with ``recipe.timestep_power = p < 1`` to favour the noisy steps, where the
        layout is decided and a young adapter has the most to learn."""
        power = self.recipe.timestep_power
        if power == 1.0:
            return torch.cat([torch.randint(0, steps, (1,), generator=g, device=device) for g in gens])
        u = torch.cat([torch.rand(1, generator=g, device=device) for g in gens])
        return (steps * u.pow(power)).long().clamp_(0, steps - 1)

    def target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """What the UNet predicts, as the backbone's scheduler says: the noise (SD 1.x) or v (SD 2.x,
        diffusers' ``get_velocity``)."""
        kind = self.noise_scheduler.config.prediction_type
        if kind == "epsilon":
            return noise
        if kind == "v_prediction":
            return self.noise_scheduler.get_velocity(latents, noise, timesteps)
        raise ValueError(f"unsupported prediction_type {kind!r} in the backbone's scheduler config")

    # -- optimisation ----------------------------------------------------------------------------------
    def configure_optimizers(self):
        recipe = self.recipe
        params = optimizer_param_groups(self.trainable_named_parameters(), recipe.lr, recipe.gate_lr_scale)
        optimizer = build_optimizer(params, recipe.optimizer, recipe.lr, recipe.betas, recipe.eps, recipe.weight_decay)
        # The official trainer's schedule (transformers' equivalent): factor step / warmup, so the
        # first optimiser step has LR 0 and the full LR is reached at step ``warmup_steps``.
        scheduler = get_constant_schedule_with_warmup(optimizer, recipe.warmup_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    def configure_model(self) -> None:
        """Under FSDP the fusers' 0-dim gates stay replicated (FSDP refuses scalars): fsdp_scalars.py."""
        if self._trainer is not None:
            exclude_scalars_from_fsdp(self.trainer.strategy, self.unet)

    def on_before_optimizer_step(self, optimizer) -> None:
        if self._trainer is not None:
            average_scalar_grads(self.trainer.strategy, self.unet)
        grads = [p.grad for _, p in self.trainable_named_parameters() if p.grad is not None]
        if grads:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
            self.log("train/grad_norm", norm, on_step=True, on_epoch=False)

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update()
