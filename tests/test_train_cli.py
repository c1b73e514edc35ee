"""`interactdiffusion-train` end to end on the tiny backbone and synthetic HICO-DET (in-process CLI)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from train_helpers import FAST, last_checkpoint, paths, run_cli, run_dirs

from interactdiffusion.training.module import CHECKPOINT_KEY


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """Synthetic data and the phrase cache, generated once for all runs of this module."""
    return tmp_path_factory.mktemp("train_shared")


def _adapter(checkpoint: dict) -> dict[str, torch.Tensor]:
    return checkpoint["state_dict"]


def test_fast_dev_run(tmp_path, shared):
    run_cli(FAST + paths(tmp_path, shared) + ["debug=fast_dev_run"])
    runs = run_dirs(tmp_path, task="debug")
    assert len(runs) == 1 and (runs[0] / ".hydra" / "config.yaml").is_file()


def test_exact_resume_and_checkpoint_contents(tmp_path, shared):
    """2 steps + resume + 2 steps == 4 steps (same seed, CPU), and what a checkpoint holds."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    common = FAST + ["data.batch_size=2", "recipe.warmup_steps=2", "recipe.lr=1e-3"]
    run_cli(common + paths(straight, shared) + ["trainer.max_steps=4"])
    run_cli(common + paths(split, shared) + ["trainer.max_steps=2"])
    (first,) = run_dirs(split)
    half = last_checkpoint(first)
    run_cli(common + paths(split, shared) + ["trainer.max_steps=4", "ckpt_path=last"])
    (full_run,) = run_dirs(straight)
    (resumed,) = run_dirs(split)
    assert first == resumed  # the resumed run continues in its own run directory

    full, end = last_checkpoint(full_run), last_checkpoint(resumed)
    assert half["global_step"] == 2 and end["global_step"] == full["global_step"] == 4
    diffs = [(full["state_dict"][k] - end["state_dict"][k]).abs().max().item() for k in full["state_dict"]]
    assert max(diffs) <= 1e-7
    assert any((full["state_dict"][k] - half["state_dict"][k]).abs().max() > 0 for k in full["state_dict"])

    # what a checkpoint holds: adapter only, optimiser + scheduler + loops, the resolved config
    keys = set(full["state_dict"])
    assert keys and all(".fuser." in k or k.startswith("unet.position_net.") for k in keys)
    assert not any(k.startswith(("vae.", "text_encoder.")) for k in keys)
    optimizer_params = sum(len(g["params"]) for g in full["optimizer_states"][0]["param_groups"])
    assert optimizer_params == len(keys)
    assert full["lr_schedulers"] and full["loops"]
    extra = full[CHECKPOINT_KEY]
    assert extra["config"]["backbone"]["kind"] == "tiny" and extra["config"]["trainer"]["max_steps"] == 4
    assert extra["batches_seen"] == 4


def test_loggers_image_grid_and_export(tmp_path, shared, monkeypatch):
    """csv + TensorBoard + wandb (offline, no account), the image grid as PNG, the export at the end."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    overrides = [o for o in FAST if o not in ("~callbacks.image_grid", "export=false")] + paths(tmp_path, shared)
    overrides += [
        "trainer.max_steps=2",
        "logger=many",
        "callbacks.image_grid.every_n_steps=2",
        "callbacks.image_grid.num_scenes=2",
        "callbacks.image_grid.num_inference_steps=2",
        "export=true",
    ]
    run_cli(overrides)
    (run,) = run_dirs(tmp_path)
    assert (run / "samples" / "step_0000002.png").is_file()

    rows = list(csv.DictReader(open(run / "csv" / "metrics.csv")))
    logged = {k for row in rows for k, v in row.items() if v not in ("", None)}
    for key in ("train/loss", "train/lr", "train/grad_norm", "train/samples_per_s", "params/trainable", "params/frozen"):
        assert key in logged, key
    assert list((run / "tensorboard").rglob("events.out.tfevents.*"))
    offline = list((run / "wandb").glob("offline-run-*"))
    assert offline and list(offline[0].glob("*.wandb"))
    assert list(offline[0].rglob("*.png"))  # the grid went to wandb as an image too

    from interactdiffusion.models.checkpoints import load_adapter
    from interactdiffusion.pipeline import InteractDiffusionPipeline

    weights, meta = load_adapter(run / "export" / "adapter.safetensors")
    ckpt = last_checkpoint(run)["state_dict"]
    assert set(weights) == {k[len("unet."):] for k in ckpt}
    for key, value in weights.items():
        assert torch.equal(value, ckpt[f"unet.{key}"])
    pipe = InteractDiffusionPipeline.from_pretrained(run / "export" / "pipeline")
    for key, value in weights.items():
        assert torch.equal(pipe.unet.state_dict()[key], value)


def test_export_only_from_a_run_directory(tmp_path, shared):
    run_cli(FAST + paths(tmp_path, shared) + ["trainer.max_steps=1"])
    (run,) = run_dirs(tmp_path)
    run_cli(FAST + paths(tmp_path, shared) + ["train=false", f"ckpt_path={run}", "export=true", "name=export"])
    (export_run,) = run_dirs(tmp_path, name="export")
    from interactdiffusion.models.checkpoints import load_adapter

    weights, _ = load_adapter(export_run / "export" / "adapter.safetensors")
    ckpt = last_checkpoint(run)["state_dict"]
    assert all(torch.equal(v, ckpt[f"unet.{k}"]) for k, v in weights.items())
    assert (export_run / "export" / "pipeline" / "model_index.json").is_file()
