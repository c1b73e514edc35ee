"""`make reproduce-table PROFILE=tiny`: every input of the paper table, made offline in the real formats.

So that the target itself is tested on a machine without weights or a GPU: a small synthetic HICO-DET, the
tiny backbone (built from its config), GLIGEN weights as diffusers publishes them (a pipeline folder), the "official"
InteractDiffusion weights as an official adapter-only ``.pth``, and the GLIGEN* and our-InteractDiffusion rows
trained for a few steps by the real ``interactdiffusion-train`` from those files. Every row is scored by a small
random-init FGAHOI and a random-init QPIC (``cli/reproduce.py``'s tiny detectors), the feature extractor is a tiny
random net: the numbers are meaningless, the machinery is real.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import torch

from ..atomic import MARKER, copy_file_atomic, write_file_atomic
from ..config_path import REPO_ROOT
from ..models.backbone import TINY_UNET_CONFIG
from ..models.checkpoints import diffusers_adapter_to_ldm
from ..models.unet import adapter_state_dict, build_grounded_unet

TRAIN_STEPS = 2
TINY_TEXT_DIM = 32


def _random_adapter(kind: str, seed: int) -> tuple[dict[str, torch.Tensor], dict]:
    """A tiny grounded UNet's adapter with random weights and non-zero gates (so it visibly acts)."""
    torch.manual_seed(seed)
    config = {**TINY_UNET_CONFIG, "cross_attention_dim": TINY_TEXT_DIM}
    unet = build_grounded_unet(config, {"kind": kind})
    state = {}
    for key, value in adapter_state_dict(unet).items():
        state[key] = torch.full_like(value, 0.5) if "alpha" in key else torch.randn_like(value) * 0.05
    return state, unet.config


def write_gligen_folder(folder: Path, seed: int = 1) -> Path:
    """GLIGEN text-box weights as diffusers publishes them: a whole pipeline folder whose UNet holds the
    gated blocks and GLIGEN's text-box ``position_net`` (no grounding config of ours)."""
    from ..models.backbone import build_tiny_backbone
    from ..pipeline import GROUNDING_CONFIG_NAME, InteractDiffusionPipeline

    backbone = build_tiny_backbone(grounding={"kind": "gligen"}, seed=0)
    state, _ = _random_adapter("gligen", seed)
    backbone.unet.load_state_dict(state, strict=False)
    InteractDiffusionPipeline.from_backbone(backbone).save_pretrained(folder)
    # diffusers' GLIGEN release: neither our grounding config nor our completion marker
    (folder / "unet" / GROUNDING_CONFIG_NAME).unlink(missing_ok=True)
    (folder / MARKER).unlink(missing_ok=True)
    return folder


def write_official_adapter(path: Path, seed: int = 2) -> Path:
    """The official adapter-only release layout (``ext_interactdiff_*.pth``: fusers + position_net, LDM names)."""
    state, config = _random_adapter("interactdiffusion", seed)
    return write_file_atomic(path, lambda tmp: torch.save(diffusers_adapter_to_ldm(state, config), tmp))


def _train(work: Path, name: str, model: str, init_from: Path | None) -> Path:
    """A few real training steps through the train CLI, exported; returns the adapter file."""
    target = work / "weights" / name / "adapter.safetensors"
    if target.is_file():
        return target
    run_dir = work / "train" / name
    shutil.rmtree(run_dir, ignore_errors=True)
    command = [
        sys.executable, "-m", "interactdiffusion.cli.train",
        "backbone=tiny", f"model={model}", "data=synthetic", "trainer=cpu", "logger=csv",
        f"trainer.max_steps={TRAIN_STEPS}", "trainer.log_every_n_steps=1", "callbacks=none",
        "export=true", f"hydra.run.dir={run_dir}", f"paths.data_dir={work / 'data'}",
        f"name=reproduce_tiny_{name}",
    ]
    if init_from is not None:
        command.append(f"model.init_from={init_from}")
    subprocess.run(command, cwd=REPO_ROOT, check=True)
    exported = run_dir / "export" / "adapter.safetensors"
    if not exported.is_file():
        raise FileNotFoundError(f"training {name} finished without an export at {exported}")
    # the sidecar first: the weights file (which carries the config itself) marks the copy done
    copy_file_atomic(exported.with_suffix(".json"), target.with_suffix(".json"))
    return copy_file_atomic(exported, target)


def prepare_tiny_inputs(work: Path, rows: list[str]) -> None:
    """Write (once) every input the chosen rows read; later runs reuse them."""
    from ..data.synthetic import write_synthetic_hicodet

    work.mkdir(parents=True, exist_ok=True)
    data = work / "data" / "synthetic"
    if not (data / "anno.mat").is_file():
        write_synthetic_hicodet(data, num_train=48, num_test=16, seed=0)
    gligen = work / "weights" / "gligen-1-4-generation-text-box"
    if not (gligen / "model_index.json").is_file():
        write_gligen_folder(gligen)
    official = work / "weights" / "interact-diffusion-v1.pth"
    if not official.is_file():
        write_official_adapter(official)
    if "gligen_star" in rows:
        _train(work, "gligen_star", "gligen", gligen)
    if "interactdiffusion_ours" in rows:
        _train(work, "interactdiffusion_ours", "interactdiffusion", None)


def tiny_row_overrides(work: Path, row: str | None = None) -> list[str]:
    """Hydra overrides that point a row at the tiny inputs (``row=None``: the ones every row shares)."""
    if row is None:
        return [
            "eval=tiny", "backbone=tiny", f"paths.data_dir={work / 'data'}", f"paths.log_dir={work / 'logs'}",
            "eval.limit=4", f"data.anno_mat={work / 'data' / 'synthetic' / 'anno.mat'}",
        ]
    weights = {
        "gligen": work / "weights" / "gligen-1-4-generation-text-box",
        "gligen_star": work / "weights" / "gligen_star" / "adapter.safetensors",
        "interactdiffusion": work / "weights" / "interact-diffusion-v1.pth",
        "interactdiffusion_ours": work / "weights" / "interactdiffusion_ours" / "adapter.safetensors",
    }
    return [f"weights={weights[row]}"] if row in weights else []
