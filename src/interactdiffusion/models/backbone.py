"""The frozen Stable Diffusion parts: from a local diffusers folder, or a tiny offline build.

Nothing here downloads. A real backbone comes from a diffusers-format folder (``unet/``, ``vae/``,
``text_encoder/``, ``tokenizer/``, ``scheduler/``); the tiny backbone is built from small configs with
random weights and the real CLIP BPE vocabulary that open_clip ships, so tests and the demo run
anywhere. The phrase embeddings (``PhraseEncoder``, ``module_fingerprint``) live in ``phrase_encoder``
and are re-exported here.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from safetensors.torch import load_file
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from ..atomic import IncompleteFolderError, check_folder, folder_atomic
from ..resume import cache_root
from .phrase_encoder import PhraseEncoder, module_fingerprint
from .sharded import is_shard_index, read_sharded_safetensors
from .space_to_depth import build_autoencoder, downscale_factor, load_autoencoder
from .unet import build_grounded_unet, freeze_all_but_adapter, is_adapter_key, set_fusers_enabled

# The training noise schedule of Stable Diffusion 1.x (REFERENCE §2).
SD_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}

EXPECTED_LAYOUT = """\
expected a diffusers-format Stable Diffusion folder:
  <path>/unet/config.json + diffusion_pytorch_model.safetensors (or .bin)
  <path>/vae/config.json + diffusion_pytorch_model.safetensors (or .bin)
  <path>/text_encoder/config.json + model.safetensors (or pytorch_model.bin)
  <path>/tokenizer/vocab.json + merges.txt (or tokenizer.json)
  <path>/scheduler/scheduler_config.json
(e.g. a local copy of CompVis/stable-diffusion-v1-4 or the SD-1.5 repository)"""

__all__ = [  # the phrase embeddings moved to ``phrase_encoder``; they are re-exported here
    "BACKBONE_METADATA_KEYS", "EXPECTED_LAYOUT", "SD_SCHEDULER_CONFIG", "TINY_TEXT_CONFIG", "TINY_UNET_CONFIG",
    "TINY_VAE_CONFIG", "Backbone", "BackboneError", "PhraseEncoder", "build_backbone", "build_clip_tokenizer",
    "build_tiny_backbone", "check_backbone_folder", "clip_tokenizer_files", "load_diffusers_backbone",
    "load_state_file", "module_fingerprint", "save_backbone",
]

_WEIGHT_FILES = {
    "unet": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
             "diffusion_pytorch_model.safetensors.index.json"),
    "vae": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    "text_encoder": ("model.safetensors", "pytorch_model.bin"),
}


class BackboneError(FileNotFoundError):
    """A backbone folder that is missing or incomplete; the message names the part and the layout."""


@dataclass
class Backbone:
    """The frozen parts plus the grounded UNet (whose fusers and ``position_net`` are trainable)."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL  # or a SpaceToDepthAutoencoder (same interface)
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    scheduler: Any
    name: str = "backbone"
    vae_scale_factor: int = field(init=False)

    def __post_init__(self):
        self.vae_scale_factor = downscale_factor(self.vae)

    @property
    def latent_scaling(self) -> float:
        return float(self.vae.config.scaling_factor)

    def frozen_encoders(self) -> tuple[nn.Module, ...]:
        """The parts that only ever extract features (SDXL adds its second text encoder)."""
        return (self.vae, self.text_encoder)

    @property
    def phrase_dim(self) -> int:
        return int(self.text_encoder.config.hidden_size)

    def phrase_encoder(self) -> PhraseEncoder:
        return PhraseEncoder(self.text_encoder, self.tokenizer)

    @torch.no_grad()
    def unet_text_conditions(self, captions, device, time_ids=None, size=(0, 0)) -> dict[str, Any]:
        """The UNet's caption inputs (SD-1.x: the last hidden state; no micro-conditioning)."""
        ids = self.tokenizer(
            list(captions), padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True,
            return_tensors="pt",
        ).input_ids.to(device)
        return {"encoder_hidden_states": self.text_encoder(ids)[0]}

    def freeze(self) -> int:
        """Freeze SD (VAE, text encoder, UNet); leave the adapter trainable. Returns its size."""
        for module in self.frozen_encoders():
            module.requires_grad_(False)
            module.eval()
        return freeze_all_but_adapter(self.unet)

    def unfreeze_unet(self) -> int:
        """Pre-training the backbone itself: the UNet trains, its adapter is frozen and switched off."""
        for module in self.frozen_encoders():
            module.requires_grad_(False)
            module.eval()
        set_fusers_enabled(self.unet, False)
        count = 0
        for name, param in self.unet.named_parameters():
            param.requires_grad_(not is_adapter_key(name))
            count += param.numel() if param.requires_grad else 0
        return count

    def to(self, device=None, dtype: torch.dtype | None = None) -> Backbone:
        for module in (self.unet, *self.frozen_encoders()):
            module.to(device=device, dtype=dtype)
        return self


# -- a real backbone from a local folder --------------------------------------------------------------
def _weights_file(folder: Path, part: str) -> Path | None:
    for name in _WEIGHT_FILES[part]:
        if (folder / part / name).is_file():
            return folder / part / name
    return None


def _is_weightless_vae(folder: Path) -> bool:
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    return config.get("_class_name") == "SpaceToDepthAutoencoder"


def check_backbone_folder(path: str | Path) -> Path:
    """Raise ``BackboneError`` naming every missing part; return the folder when complete.

    A folder written by :func:`save_backbone` carries a completion marker, checked here; an SD
    download (or the committed ``experiments/hoi-shapes/backbone``, written before markers) has none
    and is judged by its parts alone.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise BackboneError(f"backbone folder not found: {folder}\n{EXPECTED_LAYOUT}")
    try:
        check_folder(folder)
    except IncompleteFolderError as error:
        raise BackboneError(f"backbone folder {error}") from None
    missing = []
    for part in ("unet", "vae", "text_encoder"):
        if not (folder / part / "config.json").is_file():
            missing.append(f"{part}/config.json")
        elif part == "vae" and _is_weightless_vae(folder / part):
            continue
        if _weights_file(folder, part) is None:
            missing.append(f"{part}/{_WEIGHT_FILES[part][0]}")
    has_slow = all((folder / "tokenizer" / f).is_file() for f in ("vocab.json", "merges.txt"))
    if not has_slow and not (folder / "tokenizer" / "tokenizer.json").is_file():
        missing.append("tokenizer/vocab.json + tokenizer/merges.txt (or tokenizer/tokenizer.json)")
    if not (folder / "scheduler" / "scheduler_config.json").is_file():
        missing.append("scheduler/scheduler_config.json")
    if missing:
        raise BackboneError(f"backbone folder {folder} is incomplete; missing: {', '.join(missing)}\n{EXPECTED_LAYOUT}")
    return folder


def load_state_file(path: Path) -> dict[str, torch.Tensor]:
    """Read safetensors (one file or sharded), or a pickled state dict with ``weights_only=True``."""
    if is_shard_index(path):
        return read_sharded_safetensors(path)
    if path.suffix == ".safetensors":
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state


def load_diffusers_backbone(
    path: str | Path,
    grounding: dict[str, Any] | None = None,
    scheduler_config: dict[str, Any] | None = None,
    name: str | None = None,
) -> Backbone:
    """Load SD from a local diffusers folder; the UNet is rebuilt with gated blocks + our tokenizer.

    Adapter keys already present in the folder (an InteractDiffusion diffusers release) are loaded
    too; otherwise the adapter starts fresh (alphas 0, so the UNet behaves exactly like SD).
    """
    folder = check_backbone_folder(path)
    unet_config = UNet2DConditionModel.load_config(folder / "unet")
    unet_config = {k: v for k, v in unet_config.items() if not k.startswith("_")}
    unet = build_grounded_unet(unet_config, grounding)
    state = load_state_file(_weights_file(folder, "unet"))
    state = {k: v for k, v in state.items() if not (is_adapter_key(k) and k not in unet.state_dict())}
    missing, unexpected = unet.load_state_dict(state, strict=False)
    missing_sd = [k for k in missing if not is_adapter_key(k)]
    if missing_sd or unexpected:
        raise BackboneError(
            f"{folder / 'unet'}: weights do not match the UNet config "
            f"(missing {missing_sd[:3]}, unexpected {unexpected[:3]})"
        )
    vae = load_autoencoder(folder / "vae")
    # float32 whatever the files hold (a half-precision release included); runs cast as they need.
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", local_files_only=True, dtype=torch.float32)
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
    scheduler = DDPMScheduler.from_pretrained(folder / "scheduler", local_files_only=True)
    if scheduler_config:
        scheduler = DDPMScheduler.from_config({**scheduler.config, **scheduler_config})
    return Backbone(unet, vae, text_encoder, tokenizer, scheduler, name=name or folder.name)


# -- the tiny offline backbone -----------------------------------------------------------------------
TINY_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [32, 64],
    "layers_per_block": 1,
    "cross_attention_dim": 32,
    "attention_head_dim": 4,
    "norm_num_groups": 32,
}
TINY_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
    "block_out_channels": [32, 32],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 32,
}
TINY_TEXT_CONFIG: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "projection_dim": 32,
}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable-unicode table used by the BPE vocabulary."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


@functools.lru_cache(maxsize=1)
def clip_tokenizer_files() -> Path:
    """Write CLIP's BPE vocabulary (shipped inside open_clip) as the ``vocab.json``/``merges.txt`` pair.

    The result is the same 49,408-token vocabulary and merge list as SD's tokenizer, so the tiny
    backbone tokenizes exactly like the real one.
    """
    import open_clip

    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    root = cache_root()
    out = root / f"clip-bpe-{hashlib.sha1(bpe.read_bytes()).hexdigest()[:12]}"
    if (out / "vocab.json").is_file() and (out / "merges.txt").is_file():
        return out
    lines = gzip.open(bpe).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    base = list(_bytes_to_unicode().values())
    vocab = base + [v + "</w>" for v in base] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    # Published whole; processes starting together keep the first copy (they are identical).
    with folder_atomic(out, replace=False) as staging:
        (staging / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}), encoding="utf-8")
        (staging / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return out


def build_clip_tokenizer(model_max_length: int = 77) -> CLIPTokenizer:
    folder = clip_tokenizer_files()
    return CLIPTokenizer(
        str(folder / "vocab.json"),
        str(folder / "merges.txt"),
        model_max_length=model_max_length,
        pad_token="<|endoftext|>",
    )


def build_tiny_backbone(
    unet: dict[str, Any] | None = None,
    vae: dict[str, Any] | None = None,
    text_encoder: dict[str, Any] | None = None,
    grounding: dict[str, Any] | None = None,
    scheduler_config: dict[str, Any] | None = None,
    seed: int = 0,
    name: str = "tiny",
) -> Backbone:
    """A complete, small, randomly initialised backbone (deterministic for a given seed)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        tokenizer = build_clip_tokenizer()
        text_cfg = {**TINY_TEXT_CONFIG, **(text_encoder or {})}
        text_model = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                **text_cfg,
            )
        )
        unet_cfg = {**TINY_UNET_CONFIG, **(unet or {})}
        unet_cfg.setdefault("cross_attention_dim", text_cfg["hidden_size"])
        grounded = build_grounded_unet(unet_cfg, grounding)
        vae_cfg = dict(vae or {})
        if vae_cfg.get("kind", "kl") == "kl":
            vae_cfg = {**TINY_VAE_CONFIG, **vae_cfg}
        autoencoder = build_autoencoder(vae_cfg)
    scheduler = DDPMScheduler.from_config({**SD_SCHEDULER_CONFIG, **(scheduler_config or {})})
    return Backbone(grounded, autoencoder, text_model, tokenizer, scheduler, name=name)


def save_backbone(backbone: Backbone, folder: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """Write the frozen parts as a diffusers-format backbone folder that ``load_diffusers_backbone`` reads.

    The UNet is saved as a plain SD UNet (its adapter is not part of a backbone) and, like the text
    encoder, in ``dtype``: half precision halves the files and loading casts back to float32.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    with folder_atomic(folder) as staging:  # published whole, with a completion marker
        (staging / "unet").mkdir()
        backbone.unet.save_config(staging / "unet")
        config_file = staging / "unet" / "config.json"
        config = json.loads(config_file.read_text(encoding="utf-8"))
        config["attention_type"] = "default"  # a backbone's UNet has no fusers
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in backbone.unet.state_dict().items()
                 if not is_adapter_key(k)}
        save_file(state, str(staging / "unet" / _WEIGHT_FILES["unet"][0]))
        backbone.vae.save_pretrained(staging / "vae")
        text_dtype = backbone.text_encoder.dtype
        backbone.text_encoder.to(dtype).save_pretrained(staging / "text_encoder")
        backbone.text_encoder.to(text_dtype)
        backbone.tokenizer.save_pretrained(staging / "tokenizer")
        backbone.scheduler.save_pretrained(staging / "scheduler")
    return folder


BACKBONE_METADATA_KEYS = ("resolution", "generation")


def build_backbone(kind: str = "tiny", path: str | None = None, **kwargs) -> Backbone:
    """Entry point for configs: ``kind=tiny`` builds offline, ``kind=diffusers`` loads ``path``.

    Takes a whole ``backbone`` config group (plus ``grounding=``); keys that describe how the backbone
    is used rather than built (``resolution``, ``generation``) are ignored here.
    """
    kwargs = {k: v for k, v in kwargs.items() if k not in BACKBONE_METADATA_KEYS}
    if kind == "tiny":
        return build_tiny_backbone(**kwargs)
    if kind == "diffusers":
        if not path:
            raise BackboneError(f"backbone.path is not set\n{EXPECTED_LAYOUT}")
        return load_diffusers_backbone(path, **kwargs)
    if kind in ("tiny_xl", "sdxl"):  # models/sdxl.py imports this module
        from . import sdxl

        if kind == "tiny_xl":
            return sdxl.build_tiny_xl_backbone(**kwargs)
        if not path:
            raise BackboneError(f"backbone.path is not set\n{sdxl.EXPECTED_XL_LAYOUT}")
        return sdxl.load_sdxl_backbone(path, **kwargs)
    raise ValueError(f"unknown backbone kind {kind!r}: use 'tiny', 'diffusers', 'tiny_xl' or 'sdxl'")
