"""Interrupted training keeps its work: Ctrl-C / SIGTERM save ``last.ckpt``; a cut ``last.ckpt`` is skipped."""

from __future__ import annotations

import logging
import signal

import pytest
import torch
from train_helpers import FAST, paths, run_cli, run_dirs

from interactdiffusion.training.checkpointing import LAST, checkpoint_problem, find_last_checkpoint


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return tmp_path_factory.mktemp("interrupt_shared")


def _step(path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
def test_a_signal_saves_last_ckpt_and_stops(tmp_path, shared, name):
    """Steps far from the checkpoint interval (20): the signal at step 3 still leaves a step-3 checkpoint."""
    overrides = FAST + paths(tmp_path, shared) + [
        "trainer.max_steps=40", "+callbacks.send_signal._target_=train_helpers.SendSignal",
        "+callbacks.send_signal.step=3", f"+callbacks.send_signal.signal={name}",
    ]
    previous = signal.getsignal(getattr(signal, name))
    with pytest.raises(SystemExit) as stopped:
        run_cli(overrides)
    assert signal.getsignal(getattr(signal, name)) == previous  # the handlers are given back
    (run,) = run_dirs(tmp_path)
    last = run / "checkpoints" / LAST
    assert checkpoint_problem(last) is None and _step(last) in (3, 4)
    if name == "SIGINT":
        assert stopped.value.code == 128 + signal.SIGINT


def test_time_interval_saves_between_step_checkpoints(tmp_path, shared):
    run_cli(FAST + paths(tmp_path, shared) + ["trainer.max_steps=3", "callbacks.model_checkpoint.every_n_train_steps=100",
                                              "callbacks.model_checkpoint.save_last=false",
                                              "callbacks.safety_checkpoint.every_minutes=1e-6"])
    (run,) = run_dirs(tmp_path)
    assert _step(run / "checkpoints" / LAST) == 3


def test_ckpt_path_last_skips_a_truncated_last_ckpt(tmp_path, shared):
    """A ``last.ckpt`` cut short by a kill: ``ckpt_path=last`` says so and resumes from the newest intact one."""
    common = FAST + paths(tmp_path, shared) + ["callbacks.model_checkpoint.every_n_train_steps=2",
                                               "callbacks.safety_checkpoint.every_minutes=null"]
    run_cli(common + ["trainer.max_steps=4"])
    (first,) = run_dirs(tmp_path)
    last = first / "checkpoints" / LAST
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])  # what an in-place write killed midway leaves
    assert checkpoint_problem(last) is not None
    group = tmp_path / "logs" / "train" / "tiny_synthetic"
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("interactdiffusion.training.checkpointing")
    logger.addHandler(handler)
    try:
        found = find_last_checkpoint(group)
    finally:
        logger.removeHandler(handler)
    assert found is not None and found.name.startswith("step_") and _step(found) == 4
    assert any("skipping" in line and str(last) in line for line in lines), lines

    run_cli(common + ["trainer.max_steps=6", "ckpt_path=last"])  # resumed from step 4, not from scratch
    steps = {run: _step(run / "checkpoints" / LAST) for run in run_dirs(tmp_path) if (run / "checkpoints" / LAST).is_file()
             and checkpoint_problem(run / "checkpoints" / LAST) is None}
    assert 6 in steps.values()
    assert all(int(p.stem.split("_")[1]) >= 4 for run in run_dirs(tmp_path) for p in (run / "checkpoints").glob("step_*.ckpt")
               if p.stat().st_mtime_ns > last.stat().st_mtime_ns)
