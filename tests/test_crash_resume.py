"""kill -9 a real command midway, run it again: no partial or mixed output, and the resume is right.

Each command runs as a subprocess of the real entry point; ``INTERACTDIFFUSION_CRASH_AT`` makes it
SIGKILL itself at a chosen point of publishing a chosen output (``interactdiffusion.atomic``), the
moment a preemption or an OOM kill is most harmful. Also: two ``interactdiffusion-generate`` on one
folder, where the second refuses with a clear message and the first finishes untouched.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_eval_cli import read_results, run_eval
from test_generate_cli import FAST, generate, metadata, pixels, scenes, write

from interactdiffusion.atomic import CRASH_ENV, check_folder

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
KILLED = -signal.SIGKILL


def run(module: str, *args: str, crash_at: str | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**ENV, CRASH_ENV: crash_at} if crash_at else {k: v for k, v in ENV.items() if k != CRASH_ENV}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def visible(folder: Path) -> list[str]:
    """What a reader sees: the real names (staging leftovers of a killed writer are hidden)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


# -- generate -------------------------------------------------------------------------------------------
def test_generate_killed_midway_resumes_to_the_uninterrupted_result(tmp_path):
    src = write(tmp_path / "scenes.json", scenes())
    out = tmp_path / "out"
    args = [*FAST, "batch_size=1", f"input={src}", f"output_dir={out}"]
    killed = run("interactdiffusion.cli.generate", *args, crash_at="before-publish:kitchen.png")
    assert killed.returncode == KILLED, killed.stderr
    # ride finished (image, overlay, record); kitchen was being written: nothing of it under a real name
    assert visible(out) == ["metadata.jsonl", "ride.png", "ride_boxes.png"]
    assert [r["id"] for r in metadata(out)] == ["ride"]

    resumed = run("interactdiffusion.cli.generate", *args)
    assert resumed.returncode == 0, resumed.stderr
    assert visible(out) == ["3.png", "3_boxes.png", "kitchen.png", "kitchen_boxes.png", "metadata.jsonl", "ride.png",
                            "ride_boxes.png"]
    ids = [r["id"] for r in metadata(out)]
    assert sorted(ids) == ["3", "kitchen", "ride"] and len(set(ids)) == len(ids)

    straight = tmp_path / "straight"
    assert generate(*FAST, "batch_size=1", f"input={src}", f"output_dir={straight}") == 0
    for name in ("ride.png", "kitchen.png", "3.png"):
        np.testing.assert_array_equal(pixels(out / name), pixels(straight / name))


def test_a_second_generate_on_the_same_folder_refuses_and_the_first_finishes(tmp_path):
    """The first command is held (a real process, paused after its first image) while the second starts."""
    src = write(tmp_path / "scenes.json", scenes())
    out = tmp_path / "out"
    paused, release = tmp_path / "paused", tmp_path / "release"
    holder = (
        "import sys, time, pathlib\n"
        "from interactdiffusion import atomic\n"
        "real = atomic.crash_point\n"
        "def hold(stage, name):\n"
        "    if stage == 'after-publish' and name == 'ride.png':\n"
        f"        pathlib.Path({str(paused)!r}).touch()\n"
        f"        while not pathlib.Path({str(release)!r}).exists():\n"
        "            time.sleep(0.05)\n"
        "    real(stage, name)\n"
        "atomic.crash_point = hold\n"
        "from interactdiffusion.cli.generate import main\n"
        "sys.argv = ['interactdiffusion-generate'] + sys.argv[1:]\n"
        "main()\n"
    )
    args = [*FAST, "batch_size=1", f"input={src}", f"output_dir={out}"]
    first = subprocess.Popen([sys.executable, "-c", holder, *args], env=ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not paused.exists():
            assert first.poll() is None, first.communicate()[1]
            assert time.monotonic() < deadline
            time.sleep(0.1)
        second = run("interactdiffusion.cli.generate", *args)
        assert second.returncode == 2
        assert f"{out} is in use by another interactdiffusion-generate" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        release.touch()
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    records = metadata(out)
    assert sorted(r["id"] for r in records) == ["3", "kitchen", "ride"]
    assert len({json.dumps(r["settings"], sort_keys=True) for r in records}) == 1


# -- eval ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hicodet(tmp_path_factory) -> Path:
    from interactdiffusion.data.synthetic import write_synthetic_hicodet

    root = tmp_path_factory.mktemp("hicodet")
    write_synthetic_hicodet(root, num_train=24, num_test=6, formats=("mat",))
    return root


def eval_args(root: Path, hicodet: Path, out: Path) -> list[str]:
    return ["eval=tiny", f"paths.root_dir={root}", f"data.annotations={hicodet / 'anno_bbox.mat'}",
            f"data.image_dir={hicodet / 'images' / 'test2015'}", "data.synthetic=null", f"output_dir={out}",
            f"hydra.run.dir={out}/runs/run", "extras.print_config=false", "eval.batch_size=1", "eval.limit=3",
            "eval.num_workers=1"]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_eval_killed_during_generation_then_during_detection_resumes_to_the_same_row(tmp_path, hicodet):
    out = tmp_path / "row"
    args = eval_args(tmp_path, hicodet, out)
    # the layouts are test images 1, 3 and 4 (image 2 has no visible pair): killed while writing the second
    killed = run("interactdiffusion.cli.eval", *args, crash_at="before-publish:HICO_test2015_00000003.png")
    assert killed.returncode == KILLED, killed.stderr
    assert [p.name for p in (out / "images").glob("*.png")] == ["HICO_test2015_00000001.png"]
    assert not (out / "results.json").exists()

    killed = run("interactdiffusion.cli.eval", *args, crash_at="before-publish:detections.jsonl")
    assert killed.returncode == KILLED, killed.stderr
    images = {p.name: p.stat().st_mtime_ns for p in (out / "images").glob("*.png")}
    assert len(images) == 3
    assert not (out / "detections.jsonl").exists() and not (out / "results.json").exists()

    assert run_eval(tmp_path, hicodet, out, *args[6:]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (out / "images").glob("*.png")} == images  # reused, not redone
    assert json.loads((out / "run.json").read_text())["generated_this_run"] == 0

    straight = tmp_path / "straight"
    assert run_eval(tmp_path, hicodet, straight, *eval_args(tmp_path, hicodet, straight)[6:]) == 0
    resumed, reference = read_results(out), read_results(straight)
    assert resumed["map"] == reference["map"] and resumed["num_images"] == reference["num_images"] == 3
    assert (out / "detections.jsonl").read_text() == (straight / "detections.jsonl").read_text()


# -- export --------------------------------------------------------------------------------------------
def _tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_export_killed_midway_leaves_the_previous_export_whole(tmp_path):
    """Train 1 step and export; resume to step 2 and export again, killed inside the export; run it again."""
    from train_helpers import FAST as TRAIN_FAST

    from interactdiffusion.pipeline import is_pipeline_folder

    run_dir = tmp_path / "run"
    common = [*TRAIN_FAST, f"paths.root_dir={tmp_path}", f"paths.data_dir={tmp_path / 'data'}",
              f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run_dir}", "export=true"]
    first = run("interactdiffusion.cli.train", *common, "trainer.max_steps=1")
    assert first.returncode == 0, first.stderr[-3000:]
    export = run_dir / "export"
    assert check_folder(export) and is_pipeline_folder(export / "pipeline")
    before = {p.relative_to(export): p.read_bytes() for p in export.rglob("*") if p.is_file()}

    again = [*common, "trainer.max_steps=2", f"ckpt_path={run_dir}"]
    killed = run("interactdiffusion.cli.train", *again, crash_at="before-publish:pipeline")  # adapter already written
    assert killed.returncode == KILLED, killed.stderr[-3000:]
    assert {p.relative_to(export): p.read_bytes() for p in export.rglob("*") if p.is_file()} == before
    assert visible(run_dir).count("export") == 1

    done = run("interactdiffusion.cli.train", *again)  # resumes at step 2 (nothing left to train), exports
    assert done.returncode == 0, done.stderr[-3000:]
    assert check_folder(export) and is_pipeline_folder(export / "pipeline")
    adapter = _tensors(export / "adapter.safetensors")
    unet = _tensors(export / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")
    old = _tensors_from_bytes(before[Path("adapter.safetensors")])
    assert any(not torch.equal(adapter[k], old[k]) for k in adapter)  # the step-2 weights ...
    assert all(torch.equal(adapter[k], unet[k]) for k in adapter)  # ... in both parts of the export


def _tensors_from_bytes(data: bytes) -> dict:
    from safetensors.torch import load

    return load(data)
