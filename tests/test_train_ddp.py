"""2-process DDP on the CPU (gloo): it runs, and its adapter gradients equal one process's on the same
global batch (per-sample randomness is keyed by scene id and step, not by rank or position)."""

from __future__ import annotations

import os

import torch
from train_helpers import FAST, REPO, paths, run_cli, run_cli_subprocess, run_dirs


def test_ddp_sim_gradients_equal_single_process(tmp_path):
    shared = tmp_path / "shared"
    single, ddp = tmp_path / "single.pt", tmp_path / "ddp.pt"
    common = FAST + ["trainer.max_steps=1", "recipe.grounding_drop_prob=0.5", "+callbacks.grad_dump._target_=train_helpers.GradientDump"]
    run_cli(common + paths(tmp_path / "one", shared) + ["data.batch_size=4", f"+callbacks.grad_dump.path={single}"])
    env = {"PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    result = run_cli_subprocess(
        common + paths(tmp_path / "two", shared) + ["trainer=ddp_sim", "data.batch_size=2", f"+callbacks.grad_dump.path={ddp}"],
        env=env,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert len(run_dirs(tmp_path / "two")) == 1  # both processes wrote into one run directory
    a, b = torch.load(single), torch.load(ddp)
    assert a.keys() == b.keys() and len(a) > 0
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-7, msg=name)
    assert any(v.abs().max() > 0 for v in a.values())


def test_ddp_sim_callbacks_share_generation_over_the_ranks(tmp_path):
    """The image grid and the HOI eval run on both ranks (each its share), rank 0 writes the results."""
    import json

    shared = tmp_path / "shared"
    overrides = [o for o in FAST if o != "~callbacks.image_grid"] + paths(tmp_path / "run", shared) + [
        "trainer=ddp_sim", "trainer.max_steps=1", "data.batch_size=1", "callbacks=[default,hoi_eval]",
        "callbacks.image_grid.num_scenes=3", "callbacks.image_grid.num_inference_steps=1",
        "callbacks.image_grid.every_n_steps=1000", "detector@callbacks.hoi_eval.detector=random",
        "callbacks.hoi_eval.num_layouts=3", "callbacks.hoi_eval.num_inference_steps=1",
        "callbacks.hoi_eval.every_n_steps=1000", "callbacks.hoi_eval.batch_size=2",
    ]
    env = {"PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    result = run_cli_subprocess(overrides, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    (run,) = run_dirs(tmp_path / "run")
    assert len(list((run / "samples").glob("step_*.png"))) == 1
    (summary_path,) = (run / "hoi_eval").glob("step_*.json")
    summary = json.loads(summary_path.read_text())
    assert summary["num_layouts"] == 3 and summary["layouts_per_rank"] == [2, 1]
