"""Inference: scenes (or the official diffusers arguments) → images.

``InteractDiffusionPipeline`` is a diffusers ``DiffusionPipeline`` (components vae, text_encoder,
tokenizer, unet, scheduler). Per call it

- embeds every phrase once (memoised ``PhraseEncoder``) and runs the grounding tokenizer ONCE for the
  conditional and once for the null input; the tokens go to every step as ``{"gligen": {"objs": ...}}``;
- runs classifier-free guidance in one batched UNet call per step: the unconditional half is the negative
  prompt with NULL grounding (REFERENCE §3); ``guidance_scale <= 1`` skips that half entirely;
- keeps the fusers on for the first ``int(β·T)`` of the T sampler steps, or follows the official
  ``[full, decay, off]`` triple (scheduled sampling), and restores their state on exit, exception included;
- draws each scene's initial noise (and any per-step noise of a stochastic scheduler) on the CPU from its
  own generator seeded by ``scene.seed_for(base_seed)``, so an image never depends on batch size, order
  or device count.
"""

from __future__ import annotations

import inspect
import json
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UNet2DConditionModel,
    UniPCMultistepScheduler,
)
from diffusers.image_processor import VaeImageProcessor
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from transformers import CLIPTextModel, CLIPTokenizer

from .atomic import check_folder, folder_atomic
from .conditioning import PhraseIndex, grounding_kwargs, null_grounding_kwargs, scenes_to_ids
from .models import checkpoints
from .models.backbone import Backbone, PhraseEncoder, load_state_file
from .models.grounding import GLIGENGrounding, InteractionTokenizer
from .models.space_to_depth import downscale_factor, load_autoencoder
from .models.unet import (
    build_grounded_unet,
    fusers,
    install_grounding,
    is_adapter_key,
    load_adapter_state_dict,
)
from .scene import MAX_INTERACTIONS, Interaction, Scene, SceneError
from .scheduled_sampling import fuser_scale, fuser_scales, sampler_step, schedule_triple

# The paper's evaluation protocol (REFERENCE §3).
PAPER_NEGATIVE_PROMPT = (
    "longbody, lowres, bad anatomy, bad hands, missing fingers, extra digit, fewer digits, cropped, "
    "worst quality, low quality"
)
PAPER_SEED = 489
GROUNDING_CONFIG_NAME = "grounding_config.json"
# Arguments that scripts written for the official release pass to ``DiffusionPipeline.from_pretrained``
# and that mean nothing for a local folder without a safety checker: accepted and ignored.
IGNORED_LOAD_ARGUMENTS = frozenset({
    "trust_remote_code", "custom_pipeline", "local_files_only", "use_safetensors", "low_cpu_mem_usage",
    "safety_checker", "feature_extractor", "requires_safety_checker",
})

PRECISIONS: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "16": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}

# Named presets; any other diffusers scheduler class name works too (e.g. "HeunDiscreteScheduler").
SCHEDULER_PRESETS: dict[str, tuple[type, dict[str, Any]]] = {
    "plms": (PNDMScheduler, {"skip_prk_steps": True}),  # the paper's sampler
    "pndm": (PNDMScheduler, {"skip_prk_steps": True}),
    "ddim": (DDIMScheduler, {}),
    "ddpm": (DDPMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "lms": (LMSDiscreteScheduler, {}),
    "dpm++": (DPMSolverMultistepScheduler, {}),
    "unipc": (UniPCMultistepScheduler, {}),
}


def resolve_dtype(precision: str | torch.dtype | None) -> torch.dtype | None:
    """``fp32`` / ``fp16`` / ``bf16`` (or a torch dtype) → torch dtype; ``None`` stays ``None``."""
    if precision is None or isinstance(precision, torch.dtype):
        return precision
    key = str(precision).lower().replace("-mixed", "").replace("-true", "")
    if key not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use fp32, fp16 or bf16")
    return PRECISIONS[key]


def make_scheduler(
    scheduler: str | SchedulerMixin, base_config: dict[str, Any] | None = None, **overrides
) -> SchedulerMixin:
    """A scheduler by preset name (``plms``, ``ddim``, ...) or diffusers class name, on ``base_config``.

    ``base_config`` is the backbone's noise schedule (betas, timesteps); the preset adds its own switches
    (PLMS = ``PNDMScheduler(skip_prk_steps=True)``) and ``overrides`` win over both.
    """
    if isinstance(scheduler, SchedulerMixin):
        if overrides:
            return type(scheduler).from_config({**scheduler.config, **overrides})
        return scheduler
    name = str(scheduler)
    if name.lower() in SCHEDULER_PRESETS:
        cls, preset = SCHEDULER_PRESETS[name.lower()]
    else:
        import diffusers

        cls = getattr(diffusers, name, None)
        if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
            raise ValueError(
                f"unknown scheduler {name!r}: use one of {sorted(SCHEDULER_PRESETS)} or a diffusers scheduler "
                "class name such as 'DDIMScheduler'"
            )
        preset = {}
    config = {k: v for k, v in dict(base_config or {}).items() if not k.startswith("_")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls.from_config({**config, **preset, **overrides})


def grounding_config_of(module: torch.nn.Module) -> dict[str, Any]:
    """The constructor arguments of a ``position_net`` (written next to the UNet by ``save_pretrained``)."""
    if isinstance(module, (InteractionTokenizer, GLIGENGrounding)):
        return dict(module.config)
    raise TypeError(f"the UNet's position_net is a {type(module).__name__}, not one of this project's modules")


@dataclass
class InteractDiffusionPipelineOutput(BaseOutput):
    """``images`` as diffusers returns them; ``seeds`` the per-image noise seeds (None when not seeded)."""

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    nsfw_content_detected: list[bool] | None = None
    seeds: list[int | None] | None = None


def image_seed(scene_seed: int, index: int) -> int:
    """Seed of the ``index``-th image of a scene: the scene's own seed for the first image."""
    if index == 0:
        return scene_seed
    return (scene_seed * 1_000_003 + index) % (2**63 - 1)


class InteractDiffusionPipeline(DiffusionPipeline):
    """Stable Diffusion + the interaction module, following diffusers' pipeline conventions."""

    model_cpu_offload_seq = "text_encoder->unet->vae"

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: SchedulerMixin,
    ):
        super().__init__()
        if not callable(getattr(unet, "position_net", None)):
            raise TypeError("the UNet has no position_net: build it with models.unet.build_grounded_unet")
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
        self.vae_scale_factor = downscale_factor(self.vae)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)
        self.phrase_encoder = PhraseEncoder(text_encoder, tokenizer)
        self.phrase_index = PhraseIndex()

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def from_backbone(
        cls,
        backbone: Backbone,
        weights: str | Path | None = None,
        scheduler: str | SchedulerMixin = "plms",
        precision: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
    ) -> InteractDiffusionPipeline:
        """Wrap a ``Backbone`` (its grounded UNet included); the scheduler preset uses its noise schedule.

        ``weights`` (optional) are loaded into the backbone first, in place: see ``load_weights``.
        An SDXL backbone (two text encoders) gets the XL sibling, ``pipeline_xl.InteractDiffusionXLPipeline``.
        """
        if cls is InteractDiffusionPipeline and getattr(backbone, "text_encoder_2", None) is not None:
            from .pipeline_xl import InteractDiffusionXLPipeline

            return InteractDiffusionXLPipeline.from_backbone(backbone, weights, scheduler, precision, device)
        if weights is not None:
            load_weights(backbone, weights)
        pipe = cls(**cls.backbone_components(backbone),
                   scheduler=make_scheduler(scheduler, dict(backbone.scheduler.config)))
        return pipe._place(device, precision)

    @staticmethod
    def backbone_components(backbone: Backbone) -> dict[str, Any]:
        """The pipeline's components taken from a backbone (the scheduler apart)."""
        return {"vae": backbone.vae, "text_encoder": backbone.text_encoder, "tokenizer": backbone.tokenizer,
                "unet": backbone.unet}

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        torch_dtype: torch.dtype | None = None,
        variant: str | None = None,
        scheduler: str | SchedulerMixin | None = None,
        grounding: dict[str, Any] | None = None,
        precision: str | None = None,
        device: str | torch.device | None = None,
        **kwargs,
    ) -> InteractDiffusionPipeline:
        """Load a pipeline folder: one written by ``save_pretrained`` or the official diffusers release.

        Local folders only (nothing downloads). The UNet is rebuilt with gated blocks and our
        ``position_net`` from ``unet/grounding_config.json`` (absent in the official release: then the
        default InteractDiffusion tokenizer, whose key layout equals the official one), and every weight
        must load: a missing or unexpected key is an error, never a silently fresh adapter.
        """
        unknown = sorted(set(kwargs) - IGNORED_LOAD_ARGUMENTS)
        if unknown:
            raise TypeError(f"InteractDiffusionPipeline.from_pretrained got unsupported arguments: {', '.join(unknown)}")
        folder = Path(pretrained_model_name_or_path).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(
                f"pipeline folder not found: {folder} (nothing is downloaded: pass a local folder written by "
                "save_pretrained or a local copy of the official diffusers release)"
            )
        check_folder(folder)  # a marker that does not match its files: an interrupted or damaged copy
        dtype = torch_dtype if torch_dtype is not None else resolve_dtype(precision)
        if (folder / "text_encoder_2").is_dir():  # an SDXL pipeline: InteractDiffusionXLPipeline
            from .pipeline_xl import load_xl_pipeline_folder

            return load_xl_pipeline_folder(folder, variant, scheduler, grounding)._place(device, dtype)
        unet = _load_grounded_unet(folder / "unet", variant, grounding)
        part_kwargs: dict[str, Any] = {"local_files_only": True}
        if variant:
            part_kwargs["variant"] = variant
        _require(folder / "vae" / "config.json", "the VAE")
        _require(folder / "text_encoder" / "config.json", "the text encoder")
        _require(folder / "tokenizer", "the tokenizer")
        vae = load_autoencoder(folder / "vae", **{k: v for k, v in part_kwargs.items() if k != "local_files_only"})
        text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=torch.float32, **part_kwargs)
        tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
        scheduler_file = folder / "scheduler" / "scheduler_config.json"
        _require(scheduler_file, "the scheduler")
        saved = json.loads(scheduler_file.read_text(encoding="utf-8"))
        sched = make_scheduler(scheduler if scheduler is not None else saved.get("_class_name", "plms"), saved)
        pipe = cls(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=sched)
        return pipe._place(device, dtype)

    def save_pretrained(self, save_directory: str | Path, safe_serialization: bool = True, **kwargs) -> None:
        """diffusers' layout, plus ``unet/grounding_config.json`` so ``from_pretrained`` rebuilds our tokenizer.

        The folder is written beside and published whole with a completion marker (``atomic.folder_atomic``):
        a crash leaves the previous folder or none, never a partial one under the name.
        """
        with folder_atomic(Path(save_directory)) as staging:
            super().save_pretrained(staging, safe_serialization=safe_serialization, **kwargs)
            config = grounding_config_of(self.unet.position_net)
            (staging / "unet" / GROUNDING_CONFIG_NAME).write_text(
                json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8"
            )

    def _place(self, device, dtype) -> InteractDiffusionPipeline:
        dtype = resolve_dtype(dtype)
        quiet = logging.getLogger("diffusers.models.modeling_utils")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # its "modules to keep in float32: []" notice does not apply here
        try:
            for module in (self.unet, self.vae, self.text_encoder):
                if device is not None:
                    module.to(device=device)
                if dtype is not None and module.dtype != dtype:
                    module.to(dtype=dtype)
                module.eval()
        finally:
            quiet.setLevel(level)
        return self

    # -- phrases -----------------------------------------------------------------------------------
    def preload_phrases(self, table: dict[str, torch.Tensor]) -> None:
        """Seed the phrase memo from a cache table (phrase → pooled CLIP vector)."""
        dim = self.phrase_encoder.dim
        bad = [p for p, v in table.items() if tuple(v.shape) != (dim,)]
        if bad:
            raise ValueError(
                f"phrase cache does not fit this text encoder: {bad[0]!r} has shape "
                f"{tuple(table[bad[0]].shape)}, expected ({dim},)"
            )
        self.phrase_encoder.preload(table)

    def encode_phrases(self, phrases: Sequence[str]) -> torch.Tensor:
        """Embed (and memoise) phrases; call it once with every phrase of a job for batch-free results."""
        return self.phrase_encoder(list(phrases))

    def phrase_table(self) -> dict[str, torch.Tensor]:
        return self.phrase_encoder.table()

    # -- the pieces of a call ----------------------------------------------------------------------
    def encode_prompt(self, prompts: list[str], device, clip_skip: int | None = None) -> torch.Tensor:
        """CLIP hidden states of each prompt ([B, 77, D]), exactly as diffusers' SD pipeline computes them."""
        inputs = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        ids = inputs.input_ids.to(device)
        mask = None
        if getattr(self.text_encoder.config, "use_attention_mask", False):
            mask = inputs.attention_mask.to(device)
        if clip_skip is None:
            embeds = self.text_encoder(ids, attention_mask=mask)[0]
        else:
            hidden = self.text_encoder(ids, attention_mask=mask, output_hidden_states=True).hidden_states
            embeds = self.text_encoder.text_model.final_layer_norm(hidden[-(clip_skip + 1)])
        return embeds.to(self.unet.dtype)

    def caption_conditions(
        self, captions: list[str], n: int, do_cfg: bool, device, clip_skip: int | None = None,
        negative_prompt: str | list[str] | None = None, prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None, size: tuple[int, int] | None = None,
    ) -> dict[str, Any]:
        """The UNet's caption inputs for a call, each caption repeated ``n`` times and, under guidance,
        ``[negatives; prompts]``. SD-1.x: ``encoder_hidden_states``; SDXL adds ``added_cond_kwargs``."""
        if prompt_embeds is None:
            prompt_embeds = self.encode_prompt(captions, device, clip_skip)
        prompt_embeds = prompt_embeds.to(device, self.unet.dtype).repeat_interleave(n, dim=0)
        if not do_cfg:
            return {"encoder_hidden_states": prompt_embeds}
        if negative_prompt_embeds is None:
            negative_prompt_embeds = self.encode_prompt(_negatives(negative_prompt, len(captions)), device, clip_skip)
        negative_prompt_embeds = negative_prompt_embeds.to(device, self.unet.dtype).repeat_interleave(n, dim=0)
        return {"encoder_hidden_states": torch.cat([negative_prompt_embeds, prompt_embeds])}

    def grounding_tokens(self, scenes: Sequence[Scene], device) -> torch.Tensor:
        """The tokenizer's output for a batch of scenes ([B, tokens, D]), computed once per call."""
        position_net = self.unet.position_net
        dim = self.phrase_encoder.dim
        if getattr(position_net, "positive_len", dim) != dim:
            raise ValueError(
                f"the grounding tokenizer takes {position_net.positive_len}-d phrase embeddings but the text "
                f"encoder gives {dim}-d ones: the adapter does not belong to this backbone"
            )
        max_n = getattr(position_net, "max_interactions", MAX_INTERACTIONS)
        ids = scenes_to_ids(scenes, self.phrase_index, max_interactions=max_n)
        if len(self.phrase_index):
            table = self.phrase_encoder(self.phrase_index.phrases)
        else:
            table = torch.zeros(1, dim)
        kwargs = grounding_kwargs(ids, table.to(device), dtype=self.unet.dtype)
        return position_net(**kwargs)

    def null_grounding_tokens(self, batch_size: int, device) -> torch.Tensor:
        """Tokens of the "no grounding" input (masks 0): the unconditional branch of guidance."""
        position_net = self.unet.position_net
        max_n = getattr(position_net, "max_interactions", MAX_INTERACTIONS)
        kwargs = null_grounding_kwargs(
            batch_size, self.phrase_encoder.dim, max_n, device=device, dtype=self.unet.dtype
        )
        return position_net(**kwargs)

    def check_size(self, height: int, width: int) -> None:
        multiple = self.vae_scale_factor
        if height % multiple or width % multiple or height <= 0 or width <= 0:
            raise ValueError(f"height and width must be positive multiples of {multiple}, got {height}x{width}")

    # -- official-argument adapter -----------------------------------------------------------------
    @staticmethod
    def scenes_from_official_arguments(
        prompts: list[str],
        subject_phrases,
        object_phrases,
        action_phrases,
        subject_boxes,
        object_boxes,
        max_interactions: int = MAX_INTERACTIONS,
    ) -> list[Scene]:
        """The official diffusers arguments → one ``Scene`` per prompt (ids "0", "1", ...).

        Phrases and boxes are either one list shared by every prompt (the official pipeline) or one list
        per prompt. More than ``max_interactions`` triplets are truncated with a warning, as officially.
        """
        named = {
            "interactdiffusion_subject_phrases": subject_phrases,
            "interactdiffusion_object_phrases": object_phrases,
            "interactdiffusion_action_phrases": action_phrases,
            "interactdiffusion_subject_boxes": subject_boxes,
            "interactdiffusion_object_boxes": object_boxes,
        }
        given = [k for k, v in named.items() if v is not None]
        if given and len(given) != len(named):
            missing = [k for k in named if k not in given]
            raise ValueError(f"{', '.join(missing)} must be given together with {', '.join(given)}")
        batch = len(prompts)

        def per_prompt(name: str, value, boxes: bool) -> list:
            if value is None:
                return [[] for _ in range(batch)]
            value = value.tolist() if hasattr(value, "tolist") else list(value)
            first = value[0] if value else None
            if boxes:
                nested = isinstance(first, (list, tuple)) and (not first or isinstance(first[0], (list, tuple)))
            else:
                nested = isinstance(first, (list, tuple))
            if not nested:
                return [list(value) for _ in range(batch)]
            if len(value) != batch:
                raise ValueError(f"{name} has {len(value)} lists for {batch} prompts")
            return [list(v) for v in value]

        columns = {
            "subject": per_prompt("interactdiffusion_subject_phrases", subject_phrases, False),
            "object": per_prompt("interactdiffusion_object_phrases", object_phrases, False),
            "action": per_prompt("interactdiffusion_action_phrases", action_phrases, False),
            "subject_box": per_prompt("interactdiffusion_subject_boxes", subject_boxes, True),
            "object_box": per_prompt("interactdiffusion_object_boxes", object_boxes, True),
        }
        scenes = []
        for k, prompt in enumerate(prompts):
            lengths = {name: len(col[k]) for name, col in columns.items()}
            if len(set(lengths.values())) > 1:
                detail = ", ".join(f"{name}: {n}" for name, n in lengths.items())
                raise ValueError(f"prompt {k}: the interactdiffusion_* lists differ in length ({detail})")
            n = lengths["subject"]
            if n > max_interactions:
                warnings.warn(
                    f"prompt {k}: {n} interactions; only the first {max_interactions} are used", stacklevel=3
                )
                n = max_interactions
            interactions = [
                Interaction(
                    columns["subject"][k][j],
                    columns["action"][k][j],
                    columns["object"][k][j],
                    tuple(columns["subject_box"][k][j]),
                    tuple(columns["object_box"][k][j]),
                )
                for j in range(n)
            ]
            scenes.append(Scene(id=str(k), prompt=prompt, interactions=tuple(interactions)))
        return scenes

    # -- generation --------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        scenes: Scene | Sequence[Scene] | Sequence[dict] | str | list[str] | None = None,
        prompt: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        interactdiffusion_scheduled_sampling_beta: float = 0.3,
        interactdiffusion_scheduled_sampling: Sequence[float] | None = None,
        interactdiffusion_subject_phrases: list[str] | list[list[str]] | None = None,
        interactdiffusion_object_phrases: list[str] | list[list[str]] | None = None,
        interactdiffusion_action_phrases: list[str] | list[list[str]] | None = None,
        interactdiffusion_subject_boxes: list[list[float]] | list[list[list[float]]] | None = None,
        interactdiffusion_object_boxes: list[list[float]] | list[list[list[float]]] | None = None,
        interactdiffusion_inpaint_image: PIL.Image.Image | None = None,
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback: Callable[[int, int, torch.Tensor], None] | None = None,
        callback_steps: int = 1,
        cross_attention_kwargs: dict[str, Any] | None = None,
        clip_skip: int | None = None,
        seed: int | None = None,
    ):
        """Generate one image per scene (or per prompt), ``num_images_per_prompt`` times each.

        Two ways in. ``scenes``: a ``Scene``, a list of them (or their dicts); each image's noise comes
        from ``scene.seed_for(seed)`` (``seed`` defaults to ``generator.initial_seed()``, else 0). Or the
        official diffusers arguments (``prompt`` + ``interactdiffusion_*``), with diffusers' generator
        semantics. ``interactdiffusion_scheduled_sampling_beta`` keeps the official default 0.3; the
        paper's evaluation uses 1.0. ``interactdiffusion_scheduled_sampling``: the official sampler's
        ``[full, decay, off]`` triple (``scheduled_sampling.py``), instead of β's ``[β, 0, 1-β]``. Returns ``InteractDiffusionPipelineOutput`` (``.images``: PIL by
        default, ``np``, ``pt`` or ``latent``) or ``(images, None)`` with ``return_dict=False``.
        """
        if interactdiffusion_inpaint_image is not None:
            raise NotImplementedError("interactdiffusion_inpaint_image (grounded inpainting) is not supported")
        if isinstance(scenes, str) or (
            isinstance(scenes, (list, tuple)) and scenes and all(isinstance(s, str) for s in scenes)
        ):
            if prompt is not None:
                raise ValueError("pass the prompt once: positionally or as prompt=")
            scenes, prompt = None, scenes
        beta = float(interactdiffusion_scheduled_sampling_beta)
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"interactdiffusion_scheduled_sampling_beta must be in [0, 1], got {beta}")
        triple = schedule_triple(beta, interactdiffusion_scheduled_sampling)
        if num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be >= 1, got {num_images_per_prompt}")
        if output_type not in ("pil", "np", "pt", "latent"):
            raise ValueError(f"output_type must be 'pil', 'np', 'pt' or 'latent', got {output_type!r}")

        device = self._execution_device
        height = height or self.unet.config.sample_size * self.vae_scale_factor
        width = width or self.unet.config.sample_size * self.vae_scale_factor
        self.check_size(height, width)
        n = num_images_per_prompt
        position_net = self.unet.position_net
        max_n = getattr(position_net, "max_interactions", MAX_INTERACTIONS)

        # 1. scenes and the per-image noise generators
        official = scenes is None
        if official:
            if prompt is None and prompt_embeds is None:
                raise ValueError("pass scenes, or prompt (or prompt_embeds) with the interactdiffusion_* arguments")
            if prompt is None:
                prompts = [""] * prompt_embeds.shape[0]
            else:
                prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            scene_list = self.scenes_from_official_arguments(
                prompts,
                interactdiffusion_subject_phrases,
                interactdiffusion_object_phrases,
                interactdiffusion_action_phrases,
                interactdiffusion_subject_boxes,
                interactdiffusion_object_boxes,
                max_interactions=max_n,
            )
            step_generator = generator
            seeds: list[int | None] = [None] * (len(scene_list) * n)
            if isinstance(generator, list) and len(generator) != len(scene_list) * n:
                raise ValueError(f"{len(generator)} generators for {len(scene_list) * n} images")
        else:
            if prompt is not None or interactdiffusion_subject_phrases is not None:
                raise ValueError("pass either scenes or the official prompt/interactdiffusion_* arguments, not both")
            scene_list = _as_scenes(scenes)
            if seed is None:
                seed = generator.initial_seed() if isinstance(generator, torch.Generator) else 0
            seeds = [image_seed(s.seed_for(seed), k) for s in scene_list for k in range(n)]
            step_generator = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        for scene in scene_list:
            if len(scene.interactions) > max_n:
                raise SceneError(scene.id, "interactions", f"{len(scene.interactions)} > {max_n} interactions")
        batch = len(scene_list) * n
        if batch == 0:
            raise ValueError("nothing to generate: no scenes")

        # 2. text
        do_cfg = guidance_scale > 1.0
        conditions = self.caption_conditions(
            [s.caption for s in scene_list], n, do_cfg, device, clip_skip, negative_prompt, prompt_embeds,
            negative_prompt_embeds, (height, width),
        )

        # 3. timesteps; grounding tokens once per call, never per step. The fusers' scale per iteration
        # counts steps as the official sampler does (diffusers' PLMS warm-up iteration is its step 0).
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        scales = fuser_scales(triple, num_inference_steps)
        step_scales = [scales[sampler_step(i, len(timesteps), num_inference_steps)] for i in range(len(timesteps))]
        objs = None
        if any(step_scales):
            objs = self.grounding_tokens(scene_list, device).repeat_interleave(n, dim=0)
            if do_cfg:
                objs = torch.cat([self.null_grounding_tokens(batch, device), objs])

        # 4. initial noise
        shape = (batch, self.unet.config.in_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
        if latents is None:
            if official:
                latents = _official_noise(shape, generator)
            else:
                latents = torch.cat([torch.randn((1, *shape[1:]), generator=g) for g in step_generator])
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents have shape {tuple(latents.shape)}, expected {shape}")
        latents = latents.to(device=device, dtype=torch.float32) * self.scheduler.init_noise_sigma
        step_kwargs = self._step_kwargs(step_generator, eta)

        # 5. denoising, with scheduled sampling of the fusers
        saved_states = [f.enabled for f in fusers(self.unet)]
        try:
            with self.progress_bar(total=len(timesteps)) as bar:
                for i, t in enumerate(timesteps):
                    extra = dict(cross_attention_kwargs or {})
                    if step_scales[i] > 0:
                        extra["gligen"] = {"objs": objs}
                    model_input = torch.cat([latents] * 2) if do_cfg else latents
                    model_input = self.scheduler.scale_model_input(model_input, t)
                    with fuser_scale(self.unet, step_scales[i]):
                        noise_pred = self.unet(
                            model_input.to(self.unet.dtype),
                            t,
                            **conditions,
                            cross_attention_kwargs=extra or None,
                            return_dict=False,
                        )[0].float()
                    if do_cfg:
                        uncond, cond = noise_pred.chunk(2)
                        noise_pred = uncond + guidance_scale * (cond - uncond)
                    latents = self.scheduler.step(noise_pred, t, latents, **step_kwargs, return_dict=False)[0]
                    bar.update()
                    if callback is not None and i % callback_steps == 0:
                        callback(i // getattr(self.scheduler, "order", 1), t, latents)
        finally:
            for fuser, state in zip(fusers(self.unet), saved_states):
                fuser.enabled = state

        # 6. decode
        if output_type == "latent":
            images = latents
        else:
            decoded = self.vae.decode(
                (latents / self.vae.config.scaling_factor).to(self.vae.dtype), return_dict=False
            )[0]
            images = self.image_processor.postprocess(
                decoded.float(), output_type=output_type, do_denormalize=[True] * batch
            )
        self.maybe_free_model_hooks()
        if not return_dict:
            return images, None
        return InteractDiffusionPipelineOutput(images=images, nsfw_content_detected=None, seeds=seeds)

    def _step_kwargs(self, generator, eta: float) -> dict[str, Any]:
        accepted = set(inspect.signature(self.scheduler.step).parameters)
        kwargs: dict[str, Any] = {}
        if "eta" in accepted:
            kwargs["eta"] = eta
        if "generator" in accepted:
            kwargs["generator"] = generator
        return kwargs


# -- helpers ---------------------------------------------------------------------------------------
def _require(path: Path, what: str) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing ({what} of the pipeline folder)")


def _load_grounded_unet(folder: Path, variant: str | None, grounding: dict[str, Any] | None) -> UNet2DConditionModel:
    _require(folder / "config.json", "the UNet config")
    if grounding is None and (folder / GROUNDING_CONFIG_NAME).is_file():
        grounding = json.loads((folder / GROUNDING_CONFIG_NAME).read_text(encoding="utf-8"))
    config = UNet2DConditionModel.load_config(folder)
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    infix = f".{variant}" if variant else ""
    candidates = [folder / f"diffusion_pytorch_model{infix}.safetensors", folder / f"diffusion_pytorch_model{infix}.bin",
                  folder / f"diffusion_pytorch_model{infix}.safetensors.index.json"]
    weights = next((p for p in candidates if p.is_file()), None)
    if weights is None:
        raise FileNotFoundError(f"no UNet weights in {folder}: expected {candidates[0].name} (or .bin)")
    state = load_state_file(weights)
    if grounding is None and checkpoints.is_gligen_adapter(state):
        grounding = {"kind": "gligen"}  # diffusers' GLIGEN release: text-box position_net, no action token
    unet = build_grounded_unet(config, grounding)
    missing, unexpected = unet.load_state_dict(state, strict=False)
    if missing or unexpected:
        adapter_missing = [k for k in missing if is_adapter_key(k)]
        hint = (
            " (the folder has no interaction module: load an SD folder as a backbone and add the adapter)"
            if adapter_missing and len(adapter_missing) == len(missing)
            else ""
        )
        raise ValueError(
            f"{weights}: weights do not match the UNet (missing {len(missing)}, e.g. {missing[:3]}; "
            f"unexpected {len(unexpected)}, e.g. {unexpected[:3]}){hint}"
        )
    return unet


def _as_scenes(scenes) -> list[Scene]:
    if isinstance(scenes, (Scene, dict)):
        scenes = [scenes]
    out = []
    for k, s in enumerate(scenes):
        out.append(s if isinstance(s, Scene) else Scene.from_dict(s, default_id=str(k)))
    return out


def _negatives(negative_prompt: str | list[str] | None, batch: int) -> list[str]:
    if negative_prompt is None:
        return [""] * batch
    if isinstance(negative_prompt, str):
        return [negative_prompt] * batch
    if len(negative_prompt) != batch:
        raise ValueError(f"{len(negative_prompt)} negative prompts for {batch} prompts")
    return list(negative_prompt)


def _official_noise(shape, generator) -> torch.Tensor:
    """diffusers' ``randn_tensor`` semantics on the CPU: one generator for the batch, or one per image."""
    if isinstance(generator, list):
        return torch.cat([torch.randn((1, *shape[1:]), generator=g) for g in generator])
    if generator is not None and generator.device.type != "cpu":
        return torch.randn(shape, generator=generator, device=generator.device).cpu()
    return torch.randn(shape, generator=generator)


# -- weights ---------------------------------------------------------------------------------------
def is_pipeline_folder(path: str | Path) -> bool:
    """A whole pipeline (SD + adapter): ``save_pretrained`` output or the official diffusers release.

    A folder with a completion marker must match it (else :class:`~interactdiffusion.atomic.IncompleteFolderError`,
    which names the first missing or cut file). Folders without one (the official release, or an export
    from before markers) count only when every part ``model_index.json`` lists has its config, and the
    UNet its weights: a partial folder is never taken for a pipeline.
    """
    path = Path(path)
    if not (path.is_dir() and (path / "model_index.json").is_file()):
        return False
    if check_folder(path):
        return True
    try:
        index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    parts = [k for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and v[0] is not None]
    configs = ("config.json", "scheduler_config.json", "tokenizer_config.json", "vocab.json")
    if not parts or not all(any((path / p / c).is_file() for c in configs) for p in parts):
        return False
    return any((path / "unet").glob("diffusion_pytorch_model*"))


def load_weights(backbone: Backbone, weights: str | Path) -> str:
    """Load interaction weights into ``backbone`` in place; returns what was loaded, in words.

    - our export (``<name>.safetensors`` + ``<name>.json``): the adapter; when its recorded grounding
      config differs from the backbone's ``position_net`` (an ablation), the tokenizer is rebuilt first;
    - the official full ``.pth``: the whole UNet (SD + adapter), the VAE and the text encoder;
    - the official adapter-only ``.pth``, a diffusers folder's UNet, GLIGEN weights: the adapter
      (``models.checkpoints.load_adapter_into``; GLIGEN becomes an initialisation, with a report).

    A pickled file is read once and dispatched on what it holds.
    """
    path = Path(weights).expanduser()
    unet = backbone.unet
    read = None
    if path.suffix in (".pth", ".pt", ".ckpt") and path.is_file():
        raw = checkpoints.read_checkpoint(path)
        if checkpoints.is_full_checkpoint(raw):
            full = checkpoints.official_full_from_raw(raw, path, unet_config=unet.config)
            return _load_full_checkpoint(backbone, full, path)
        read = checkpoints.adapter_from_raw(raw, path, unet)
    elif path.suffix in (".safetensors", ".json") or not path.exists():
        _match_exported_grounding(unet, path)
    missing = checkpoints.load_adapter_into(unet, path, read=read)
    return f"adapter from {path}" + (f" ({len(missing)} keys missing)" if missing else "")


def _match_exported_grounding(unet: UNet2DConditionModel, path: Path) -> None:
    """Rebuild ``position_net`` when our export says it was trained with another grounding config."""
    try:
        meta = checkpoints.export_config(path)
    except checkpoints.CheckpointError:
        return  # not our export: load_adapter_into reads (or rejects) it
    recorded = dict(meta.get("grounding") or {})
    if not recorded and meta.get("grounding_module") == "GLIGENGrounding":
        recorded = {"kind": "gligen"}
    recorded.pop("init_from", None)
    current = grounding_config_of(unet.position_net)
    if recorded.get("kind", current["kind"]) != current["kind"]:
        current = {k: v for k, v in current.items() if k in ("positive_len", "out_dim")}
    wanted = {**current, **recorded}
    if wanted != grounding_config_of(unet.position_net):
        install_grounding(unet, wanted).to(device=unet.device, dtype=unet.dtype)


def _load_full_checkpoint(backbone: Backbone, full: checkpoints.OfficialCheckpoint, path: Path) -> str:
    unet = backbone.unet
    adapter = full.adapter
    if checkpoints.is_gligen_adapter(adapter) and not isinstance(unet.position_net, GLIGENGrounding):
        adapter = checkpoints.init_from_gligen(adapter, unet, source=str(path))[0]
    sd = {k: v for k, v in full.unet.items() if not is_adapter_key(k)}
    missing, unexpected = unet.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not is_adapter_key(k)]
    if missing or unexpected:
        raise checkpoints.CheckpointError(
            f"{path}: the UNet does not fit the backbone (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    load_adapter_state_dict(unet, adapter)
    parts = ["UNet"]
    if full.vae is not None:
        backbone.vae.load_state_dict(full.vae)
        parts.append("VAE")
    if full.text_encoder is not None:
        backbone.text_encoder.load_state_dict(full.text_encoder)
        parts.append("text encoder")
    return f"official full checkpoint {path} ({', '.join(parts)})"


def load_pipeline(
    backbone: Backbone | Callable[[], Backbone] | None,
    weights: str | Path | None = None,
    scheduler: str | SchedulerMixin = "plms",
    precision: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
) -> tuple[InteractDiffusionPipeline, str]:
    """The pipeline for a backbone + weights pair, and a line saying what was loaded.

    A whole pipeline folder as ``weights`` is loaded by itself (its own SD weights; the backbone is
    not built). ``backbone`` may be a callable so that it is only built when needed.
    """
    if weights is not None and is_pipeline_folder(weights):
        pipe = InteractDiffusionPipeline.from_pretrained(weights, scheduler=scheduler, precision=precision, device=device)
        return pipe, f"pipeline folder {weights}"
    if backbone is None:
        raise ValueError("a backbone is needed unless weights is a whole pipeline folder")
    if callable(backbone) and not isinstance(backbone, Backbone):
        backbone = backbone()
    what = load_weights(backbone, weights) if weights is not None else f"the backbone {backbone.name} as it is"
    pipe = InteractDiffusionPipeline.from_backbone(backbone, scheduler=scheduler, precision=precision, device=device)
    return pipe, what
