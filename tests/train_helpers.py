"""Helpers of the training tests: run the real CLI (in-process or as a subprocess) on tiny settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from lightning import Callback

REPO = Path(__file__).resolve().parents[1]

# Tiny and fast: 32 px, batch 2, no image grid unless a test asks for it, no config printing.
FAST = [
    "experiment=tiny_synthetic",
    "data.batch_size=2",
    "data.num_workers=0",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "~callbacks.image_grid",
    "export=false",
    "extras.print_config=false",
]


def paths(root: Path, shared: Path) -> list[str]:
    """Run output under ``root``; synthetic data and caches shared by the session (built once)."""
    return [
        f"paths.root_dir={root}",
        f"paths.data_dir={shared / 'data'}",
        f"paths.cache_dir={shared / 'cache'}",
    ]


def run_cli(overrides: list[str]):
    """``interactdiffusion-train <overrides>`` in this process; returns what ``main`` returns."""
    from hydra.core.global_hydra import GlobalHydra

    from interactdiffusion.cli.train import main

    saved = sys.argv
    sys.argv = ["interactdiffusion-train", *overrides]
    try:
        return main()
    finally:
        sys.argv = saved
        GlobalHydra.instance().clear()


def run_cli_subprocess(overrides: list[str], env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "interactdiffusion.cli.train", *overrides],
        cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout,
    )


def run_dirs(root: Path, name: str = "tiny_synthetic", task: str = "train") -> list[Path]:
    return sorted((root / "logs" / task / name / "runs").glob("*"))


def last_checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


class GradientDump(Callback):
    """Saves, on rank 0, the adapter gradients of the first optimiser step (after DDP's all-reduce).

    Instantiated by Hydra inside the training processes (``+callbacks.grad_dump._target_=...``).
    """

    def __init__(self, path: str):
        self.path = path
        self.done = False

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if self.done:
            return
        self.done = True
        if trainer.is_global_zero:
            grads = {n: p.grad.detach().clone() for n, p in pl_module.named_parameters() if p.grad is not None}
            torch.save(grads, self.path)


class SendSignal(Callback):
    """Sends ``signal`` to this very process once the run has done ``step`` optimiser steps.

    A real signal through the real handlers, delivered between two training steps as a preemption
    or a Ctrl-C would be (``+callbacks.send_signal._target_=train_helpers.SendSignal``).
    """

    def __init__(self, step: int, signal: str = "SIGINT"):
        self.step = step
        self.signal = signal

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        import signal

        if trainer.global_step == self.step:
            os.kill(os.getpid(), getattr(signal, self.signal))
