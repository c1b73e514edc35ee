"""``interactdiffusion-generate`` end to end on the tiny backbone: outputs, resume, bad input.

One test runs the real command in a subprocess (exit codes, console script wiring); the others call
the same Hydra entry point in-process, which is faster and equally real (same config composition).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from interactdiffusion import generation
from interactdiffusion.cli import generate as cli

FAST = ["backbone=tiny", "steps=2", "batch_size=2", "progress=false"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """See tests/test_pipeline.py: the tiny models run ~10x faster on one thread on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def interaction(subject="person", action="riding", obj="horse", sbox=(0.1, 0.1, 0.5, 0.9), obox=(0.3, 0.4, 0.9, 0.95)):
    return {"subject": subject, "action": action, "object": obj, "subject_box": list(sbox), "object_box": list(obox)}


def scenes():
    return [
        {"id": "ride", "prompt": "a person is riding a horse", "interactions": [interaction()]},
        {"id": "kitchen", "interactions": [
            interaction("person", "holding", "cup", (0.05, 0.1, 0.45, 0.95), (0.35, 0.4, 0.55, 0.6)),
            interaction("dog", "chasing", "ball", (0.5, 0.5, 0.9, 0.9), (0.7, 0.1, 0.8, 0.2)),
        ]},
        {"id": "3", "prompt": "an empty street", "seed": 7, "interactions": []},
    ]


def write(path: Path, items) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(i) + "\n" for i in items))
    elif path.suffix in (".yaml", ".yml"):
        import yaml

        path.write_text(yaml.safe_dump(items))
    else:
        path.write_text(json.dumps(items))
    return path


def generate(*args: str) -> int:
    """Run the Hydra entry point in-process; returns the exit code."""
    argv = sys.argv
    sys.argv = ["interactdiffusion-generate", *args]
    try:
        cli.main()
        return 0
    except SystemExit as exit_:
        return int(exit_.code or 0)
    finally:
        sys.argv = argv


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def metadata(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]


# -- the real command ---------------------------------------------------------------------------------
def test_command_end_to_end_then_resume(tmp_path, capsys):
    src = write(tmp_path / "scenes.json", scenes())
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "interactdiffusion.cli.generate", *FAST, f"input={src}", f"output_dir={out}"]
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["3.png", "3_boxes.png", "kitchen.png", "kitchen_boxes.png", "metadata.jsonl", "ride.png",
                     "ride_boxes.png"]
    records = {r["id"]: r for r in metadata(out)}
    assert set(records) == {"ride", "kitchen", "3"}
    assert records["3"]["seed"] == 7 and records["ride"]["seed"] == 489 + __import__("zlib").crc32(b"ride")
    assert records["kitchen"]["scene"]["interactions"][1]["action"] == "chasing"
    settings = records["ride"]["settings"]
    assert (settings["steps"], settings["scheduler"], settings["beta"], settings["guidance_scale"]) == (2, "plms", 1.0, 7.5)
    assert pixels(out / "ride.png").shape == (32, 32, 3)
    assert pixels(out / "ride_boxes.png").shape[0] >= 256  # the overlay is enlarged to stay legible

    # Same command again (in-process, to save a start-up): nothing to do, nothing touched.
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert generate(*FAST, f"input={src}", f"output_dir={out}") == 0
    assert "3 of 3 scenes already" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps

    # Bad input through the real command: exit code 2 and a message naming scene and field.
    bad = write(tmp_path / "bad.json", [{"id": "oops", "interactions": [interaction(sbox=(0.5, 0.1, 0.2, 0.9))]}])
    failed = subprocess.run([*command[:-2], f"input={bad}", f"output_dir={tmp_path / 'bad_out'}"],
                            capture_output=True, text=True, env=env, timeout=600)
    assert failed.returncode == 2
    assert "scene 'oops'" in failed.stderr and "interactions[0].subject_box" in failed.stderr
    assert not (tmp_path / "bad_out").exists()


# -- resuming ---------------------------------------------------------------------------------------------
def test_resume_regenerates_only_what_is_missing_with_identical_pixels(tmp_path):
    src = write(tmp_path / "scenes.jsonl", scenes())
    out = tmp_path / "out"
    assert generate(*FAST, f"input={src}", f"output_dir={out}") == 0
    before = {sid: pixels(out / f"{sid}.png") for sid in ("ride", "kitchen", "3")}
    (out / "kitchen.png").unlink()
    (out / "ride_boxes.png").unlink()
    with (out / "metadata.jsonl").open("a") as fh:
        fh.write('{"id": "half a line')  # what a crash mid-write would leave
    # Another batch size: the image of a scene does not depend on it (up to float rounding: batched CPU
    # kernels differ in the last bits, ~1e-6, which can flip an 8-bit level on a rare pixel).
    assert generate(*FAST, "batch_size=1", f"input={src}", f"output_dir={out}") == 0
    diff = np.abs(pixels(out / "kitchen.png").astype(int) - before["kitchen"])
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    assert (out / "ride_boxes.png").is_file()
    assert sorted(r["id"] for r in metadata(out)) == ["3", "kitchen", "ride"]
    assert not list(out.glob(".*.tmp"))


def test_a_crash_leaves_no_partial_files_and_the_rerun_finishes(tmp_path, monkeypatch, capsys):
    from interactdiffusion.pipeline import InteractDiffusionPipeline

    src = write(tmp_path / "scenes.yaml", scenes())
    out = tmp_path / "out"
    real_call = InteractDiffusionPipeline.__call__
    calls = []

    def crash_on_second_batch(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("power cut")
        return real_call(self, *args, **kwargs)

    monkeypatch.setattr(InteractDiffusionPipeline, "__call__", crash_on_second_batch)
    assert generate(*FAST, "batch_size=1", f"input={src}", f"output_dir={out}") == 1  # Hydra reports it
    assert "power cut" in capsys.readouterr().err
    assert [r["id"] for r in metadata(out)] == ["ride"]
    assert sorted(p.name for p in out.iterdir()) == ["metadata.jsonl", "ride.png", "ride_boxes.png"]
    monkeypatch.setattr(InteractDiffusionPipeline, "__call__", real_call)
    assert generate(*FAST, "batch_size=1", f"input={src}", f"output_dir={out}") == 0
    assert sorted(r["id"] for r in metadata(out)) == ["3", "kitchen", "ride"]


def test_resume_with_other_settings_is_refused(tmp_path, capsys):
    src = write(tmp_path / "scenes.json", scenes()[:1])
    out = tmp_path / "out"
    assert generate(*FAST, f"input={src}", f"output_dir={out}") == 0
    assert generate(*FAST, "guidance_scale=3", f"input={src}", f"output_dir={out}") == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "guidance_scale: 7.5 there, 3.0 now" in err
    changed = scenes()[:1]
    changed[0]["prompt"] = "a person is feeding a horse"
    write(src, changed)
    assert generate(*FAST, f"input={src}", f"output_dir={out}") == 2
    assert "scene 'ride'" in capsys.readouterr().err


# -- weights and options ----------------------------------------------------------------------------------
def test_weights_box_format_pixels_and_truncation(tmp_path, capsys):
    from interactdiffusion.models.backbone import build_tiny_backbone
    from interactdiffusion.models.checkpoints import save_adapter
    from interactdiffusion.models.unet import adapter_named_parameters

    backbone = build_tiny_backbone(seed=0)
    with torch.no_grad():
        for name, param in adapter_named_parameters(backbone.unet):
            if "alpha" in name:
                param.fill_(0.8)
            elif name.startswith("position_net."):
                param.normal_(0, 0.3)
    weights = save_adapter(backbone.unet, tmp_path / "adapter", config={"kind": "interactdiffusion"})

    many = [interaction(sbox=(0.01 * k, 0.1, 0.5, 0.9)) for k in range(31)]
    in_pixels = {"id": "px", "width": 200, "height": 100, "interactions": [
        {**interaction(), "subject_box": [20, 10, 100, 90], "object_box": [60, 40, 180, 95]}]}
    src = write(tmp_path / "scenes.json", [{"id": "many", "interactions": many}, in_pixels])
    out = tmp_path / "out"
    plain = tmp_path / "plain"
    cache = tmp_path / "phrases.safetensors"
    args = [*FAST, f"input={src}", "box_format=pixels", f"phrase_cache={cache}"]
    assert generate(*args, f"output_dir={out}") == 2  # 31 interactions without truncate=true
    assert "scene 'many', field 'interactions'" in capsys.readouterr().err
    many_px = [{**i, "subject_box": [2 * k + 1, 10, 100, 90], "object_box": [60, 40, 180, 95]}
               for k, i in enumerate(many)]
    write(src, [{"id": "many", "width": 200, "height": 100, "interactions": many_px}, in_pixels])
    assert generate(*args, "truncate=true", f"weights={weights}", f"output_dir={out}") == 0
    assert "truncated to 30" in capsys.readouterr().out
    assert generate(*args, "truncate=true", f"output_dir={plain}") == 0
    records = {r["id"]: r for r in metadata(out)}
    assert len(records["many"]["scene"]["interactions"]) == 30
    assert records["px"]["scene"]["interactions"][0]["subject_box"] == [0.1, 0.1, 0.5, 0.9]
    assert records["px"]["settings"]["weights"] == str(weights.resolve())
    assert records["px"]["settings"]["weights_sha256"].startswith("sha256:")
    assert np.abs(pixels(out / "px.png").astype(int) - pixels(plain / "px.png")).max() > 0  # weights used
    from interactdiffusion.data.phrase_cache import read_phrase_table

    assert set(read_phrase_table(cache)) == {"person", "riding", "horse"}  # written once, then read back

    # other weights re-published under the same file name: resuming into `out` is refused, not mixed
    with torch.no_grad():
        for name, param in adapter_named_parameters(backbone.unet):
            if "alpha" in name:
                param.fill_(0.5)
    assert save_adapter(backbone.unet, tmp_path / "adapter", config={"kind": "interactdiffusion"}) == weights
    assert generate(*args, "truncate=true", f"weights={weights}", f"output_dir={out}") == 2
    assert "weights_sha256" in capsys.readouterr().err


def test_a_whole_pipeline_folder_as_weights_needs_no_backbone(tmp_path):
    from interactdiffusion.models.backbone import build_tiny_backbone
    from interactdiffusion.pipeline import InteractDiffusionPipeline

    InteractDiffusionPipeline.from_backbone(build_tiny_backbone(seed=0)).save_pretrained(tmp_path / "pipe")
    src = write(tmp_path / "scenes.json", scenes()[:1])
    out = tmp_path / "out"
    # backbone=sd14 points at a folder that does not exist: it must not be needed.
    args = ["backbone=sd14", "resolution=32", "steps=1", "progress=false", f"weights={tmp_path / 'pipe'}"]
    assert generate(*args, f"input={src}", f"output_dir={out}") == 0
    assert metadata(out)[0]["settings"]["backbone"] == "(the pipeline folder in weights)"
    assert pixels(out / "ride.png").shape == (32, 32, 3)


def test_batches_keep_input_order_and_one_size_per_batch():
    settings = generation.Settings(steps=1, guidance_scale=7.5, beta=1.0, seed=0, scheduler="plms", scheduler_kwargs={},
                            eta=0.0, precision="fp32", negative_prompt="", resolution=32, use_scene_size=True,
                            backbone="tiny", weights=None, batch_size=2)
    from interactdiffusion.scene import Scene

    items = [Scene(str(k), (), width=w, height=h) for k, (w, h) in enumerate([(64, 48), (100, 50), (64, 48), (64, 48)])]
    assert [(size, [s.id for s in b]) for size, b in generation.batches(items, settings)] == [
        ((48, 64), ["0", "2"]), ((48, 64), ["3"]), ((48, 96), ["1"])]
    settings.use_scene_size = False
    assert [[s.id for s in b] for _, b in generation.batches(items, settings)] == [["0", "1"], ["2", "3"]]


# -- bad input: every case names the scene and field, exits 2, writes nothing ---------------------------
BAD_SCENES = {
    "box outside [0, 1]": ([{"id": "s1", "interactions": [interaction(obox=(0.3, 0.4, 1.2, 0.9))]}],
                           ["scene 's1'", "interactions[0].object_box", "outside [0, 1]"]),
    "x2 <= x1": ([{"id": "s2", "interactions": [interaction(sbox=(0.5, 0.1, 0.5, 0.9))]}],
                 ["scene 's2'", "interactions[0].subject_box", "x2 > x1"]),
    "empty phrase": ([{"id": "s3", "interactions": [interaction(action="  ")]}],
                     ["scene 's3'", "interactions[0].action", "non-empty"]),
    "more than 30": ([{"id": "s4", "interactions": [interaction()] * 31}],
                     ["scene 's4'", "field 'interactions'", "31 interactions", "truncate=true"]),
    "missing field": ([{"id": "s5", "interactions": [{"subject": "person", "action": "riding", "object": "horse",
                                                      "subject_box": [0, 0, 1, 1]}]}],
                      ["scene 's5'", "interactions[0].object_box", "missing"]),
    "duplicate id": ([{"id": "d", "interactions": []}, {"id": "d", "interactions": []}],
                     ["scene 'd'", "duplicate"]),
    "id unusable as a file name": ([{"id": "a/b", "interactions": []}], ["scene 'a/b'", "field 'id'", "file name"]),
    "colliding outputs": ([{"id": "x", "interactions": []}, {"id": "x_boxes", "interactions": []}],
                          ["scene 'x_boxes'", "collides with scene 'x'"]),
}


@pytest.mark.parametrize("case", sorted(BAD_SCENES))
def test_bad_scene_file(case, tmp_path, capsys):
    items, expected = BAD_SCENES[case]
    good = {"id": "fine", "interactions": [interaction()]}  # a valid scene first: still nothing is generated
    src = write(tmp_path / "scenes.json", [good, *items])
    out = tmp_path / "out"
    assert generate(*FAST, f"input={src}", f"output_dir={out}") == 2
    err = capsys.readouterr().err
    for fragment in expected:
        assert fragment in err, (fragment, err)
    assert not out.exists()


BAD_SETTINGS = {
    "beta=1.5": "setting 'beta' must be in [0.0, 1.0]",
    "steps=0": "setting 'steps' must be in [1",
    "precision=fp64": "setting 'precision' must be one of",
    "scheduler=Nope": "setting 'scheduler': unknown scheduler 'Nope'",
    "box_format=inches": "setting 'box_format' must be one of normalized, pixels",
    "resolution=30": "setting 'resolution' must be a multiple of 8",
    "input=missing.json": "input file not found",
    "weights=/nonexistent/adapter.safetensors": "/nonexistent/adapter",
}


@pytest.mark.parametrize("override", sorted(BAD_SETTINGS))
def test_bad_settings(override, tmp_path, capsys):
    src = write(tmp_path / "scenes.json", scenes())
    args = [*FAST, f"input={src}", f"output_dir={tmp_path / 'out'}"]
    args = [a for a in args if a.split("=")[0] != override.split("=")[0]] + [override]
    assert generate(*args) == 2
    assert BAD_SETTINGS[override] in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_unparsable_file_and_missing_input(tmp_path, capsys):
    bad = tmp_path / "scenes.json"
    bad.write_text("[{not json")
    assert generate(*FAST, f"input={bad}", f"output_dir={tmp_path / 'out'}") == 2
    assert "cannot parse" in capsys.readouterr().err
    assert generate(*FAST, f"output_dir={tmp_path / 'out'}") == 2
    assert "setting 'input' is required" in capsys.readouterr().err


def test_validation_and_metadata_follow_the_loaded_adapter(tmp_path, capsys):
    """A 4-slot adapter (HOI-Shapes) refuses a 5-interaction scene before generating; a GLIGEN adapter is
    recorded as GLIGEN although the config says interactdiffusion."""
    from interactdiffusion.models.backbone import build_tiny_backbone
    from interactdiffusion.models.checkpoints import save_adapter

    small = build_tiny_backbone(seed=0, grounding={"kind": "interactdiffusion", "max_interactions": 4})
    four = save_adapter(small.unet, tmp_path / "four", config={"kind": "interactdiffusion", "max_interactions": 4})
    five = [interaction(sbox=(0.01 * k, 0.1, 0.5, 0.9)) for k in range(5)]
    src = write(tmp_path / "scenes.json", [{"id": "five", "interactions": five}])
    out = tmp_path / "out"
    assert generate(*FAST, f"input={src}", f"weights={four}", f"output_dir={out}") == 2
    err = capsys.readouterr().err
    assert "scene 'five'" in err and "at most 4" in err
    assert not out.exists()

    gligen = build_tiny_backbone(seed=0, grounding={"kind": "gligen"})
    weights = save_adapter(gligen.unet, tmp_path / "gligen", config={"kind": "gligen"})
    src = write(tmp_path / "one.json", scenes()[:1])
    assert generate(*FAST, f"input={src}", f"weights={weights}", f"output_dir={out}") == 0
    assert metadata(out)[0]["settings"]["grounding"]["kind"] == "gligen"
    assert generate(*FAST, f"input={src}", f"weights={weights}", f"output_dir={out}") == 0  # resumes


def test_the_shipped_example_scene_file_generates(tmp_path):
    example = Path(__file__).resolve().parents[1] / "examples" / "scenes.json"
    out = tmp_path / "out"
    assert generate(*FAST, "steps=1", f"input={example}", f"output_dir={out}") == 0
    assert sorted(r["id"] for r in metadata(out)) == ["kitchen", "ride"]


def test_scene_file_typos_lines_binary_and_vocabulary(tmp_path, capsys):
    """A misspelled key is an error naming it with a suggestion; JSONL errors give the right line; a
    binary file is a message; phrases outside a given training vocabulary are a warning."""
    typo = write(tmp_path / "typo.json", [{"id": "t", "interaction": [interaction()]}])
    assert generate(*FAST, f"input={typo}", f"output_dir={tmp_path / 'out'}") == 2
    err = capsys.readouterr().err
    assert "field 'interaction'" in err and "did you mean 'interactions'" in err
    inner = write(tmp_path / "inner.json", [{"id": "t", "interactions": [{**interaction(), "objectbox": [0, 0, 1, 1]}]}])
    assert generate(*FAST, f"input={inner}", f"output_dir={tmp_path / 'out'}") == 2
    assert "did you mean 'object_box'" in capsys.readouterr().err

    lines = tmp_path / "scenes.jsonl"
    lines.write_text("\n" + json.dumps({"id": "a", "interactions": []}) + "\n\n"
                     + json.dumps({"id": "b", "width": -1, "interactions": []}) + "\n")
    assert generate(*FAST, f"input={lines}", f"output_dir={tmp_path / 'out'}") == 2
    assert f"{lines}:4: scene 'b', field 'width'" in capsys.readouterr().err

    binary = tmp_path / "scenes.json"
    binary.write_bytes(bytes(range(256)))
    assert generate(*FAST, f"input={binary}", f"output_dir={tmp_path / 'out'}") == 2
    assert "not a UTF-8 text file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

    from interactdiffusion.vocab import HOIVocabulary

    vocab = HOIVocabulary.from_action_list([("horse", "ride", "riding")])
    vocab.save(tmp_path / "vocabulary.json")
    src = write(tmp_path / "ok.json", [{"id": "x", "interactions": [interaction(obj="unicorn")]}])
    assert generate(*FAST, "steps=1", f"input={src}", f"vocabulary={tmp_path / 'vocabulary.json'}",
                    f"output_dir={tmp_path / 'ok'}") == 0
    out = capsys.readouterr()
    assert "'unicorn' is outside the training vocabulary" in out.out + out.err


def test_nan_weights_fail_the_scene_naming_the_weights(tmp_path, capsys):
    from interactdiffusion.models.backbone import build_tiny_backbone
    from interactdiffusion.models.checkpoints import save_adapter
    from interactdiffusion.models.unet import adapter_named_parameters

    backbone = build_tiny_backbone(seed=0)
    with torch.no_grad():
        for name, param in adapter_named_parameters(backbone.unet):
            if name.startswith("position_net."):
                param.fill_(float("nan"))
    weights = save_adapter(backbone.unet, tmp_path / "nan", config={"kind": "interactdiffusion"})
    src = write(tmp_path / "scenes.json", scenes()[:1])
    out = tmp_path / "out"
    assert generate(*FAST, "steps=1", f"input={src}", f"weights={weights}", f"output_dir={out}") == 2
    err = capsys.readouterr().err
    assert "scene 'ride'" in err and "non-finite" in err and str(weights.resolve()) in err
    assert not (out / "metadata.jsonl").exists() or not (out / "metadata.jsonl").read_text()
    assert not (out / "ride.png").exists()
