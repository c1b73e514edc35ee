"""wandb dashboards, read back from offline runs: native box overlays, eval tables, sweep grouping.

Every run is offline (``WANDB_MODE=offline``); the assertions read the run folder the way the server
would (``dashboards.offline.read_offline_run``: the ``.wandb`` transaction log and ``files/media``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from train_helpers import FAST, paths, run_cli, run_dirs

from interactdiffusion.dashboards.media import ROLE_CLASS_LABELS
from interactdiffusion.dashboards.offline import find_offline_runs, read_offline_run
from interactdiffusion.vocab import COCO_CATEGORIES, HOIVocabulary

ROLES = {"subject", "object", "action"}


def hico_sized_vocabulary() -> HOIVocabulary:
    """600 distinct (verb, object) classes over the 80 COCO objects, as HICO-DET has (names made up)."""
    objects = [name for _, name in COCO_CATEGORIES]
    entries = []
    for k in range(600):
        obj = k % 80
        verb = (k // 80 * 13 + obj) % 117  # 13·j mod 117 differs for j < 9: pairs never repeat
        entries.append((objects[obj], f"verb{verb:03d}", f"verb{verb:03d}ing"))
    counts = [3 if k % 5 == 0 else 20 for k in range(600)]
    return HOIVocabulary.from_action_list(entries, train_counts=counts)


@pytest.fixture(scope="module")
def hicodet(tmp_path_factory) -> Path:
    from interactdiffusion.data.synthetic import write_synthetic_hicodet

    root = tmp_path_factory.mktemp("hicodet600")
    write_synthetic_hicodet(root, num_train=12, num_test=5, formats=("mat",), vocab=hico_sized_vocabulary())
    return root


def run_eval(root: Path, hicodet: Path, *overrides: str, multirun: bool = False) -> None:
    from hydra.core.global_hydra import GlobalHydra

    from interactdiffusion.cli.eval import main

    argv = ["interactdiffusion-eval", *(["-m"] if multirun else []), "eval=tiny", "logger=wandb",
            f"paths.root_dir={root}", f"data.annotations={hicodet / 'anno_bbox.mat'}",
            f"data.image_dir={hicodet / 'images' / 'test2015'}", "data.synthetic=null", "extras.print_config=false",
            "eval.limit=3", "eval.batch_size=4", *overrides]
    saved, sys.argv = sys.argv, argv
    try:
        main()
    finally:
        sys.argv = saved
        GlobalHydra.instance().clear()


def assert_role_boxes(run, key: str, groups: set[str]) -> int:
    """Every image under ``key`` has the box groups, each with the three role classes; returns the count."""
    per_image = run.boxes(key)
    assert per_image
    for image in per_image:
        assert set(image) == groups
    for group in groups:
        assert run.class_labels(key, group) == ROLE_CLASS_LABELS
    found = {ROLE_CLASS_LABELS[box["class_id"]] for image in per_image for box in image["ground_truth" if
             "ground_truth" in groups else "layout"]}
    assert found == ROLES
    return len(per_image)


def test_eval_row_summary_per_class_table_and_gallery(tmp_path, hicodet, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "row"
    run_eval(tmp_path, hicodet, f"output_dir={out}", f"hydra.run.dir={out}/runs/run", "row=tiny600")
    assert "wandb sync " in capsys.readouterr().out
    (folder,) = find_offline_runs(out / "runs" / "run")
    run = read_offline_run(folder)
    assert run.finished
    assert run.name == "tiny600" and run.group == "tiny600" and "eval" in run.tags

    # summary metrics named by protocol / setting / split, FID and KID
    results = json.loads((out / "results.json").read_text())
    for protocol in ("official", "fgahoi"):
        for setting in ("default", "known_object"):
            for split in ("full", "rare", "non_rare"):
                value = results["map"][protocol][setting][split]  # None (not computable) is not logged
                assert run.summary.get(f"eval/{protocol}/map_{setting}_{split}") == value
            assert f"eval/{protocol}/map_{setting}_full" in run.summary
    assert run.summary["eval/fid"] == run.summary["eval/fid"] and "eval/kid_mean" in run.summary
    assert run.summary["row"] == "tiny600" and run.summary["meaningful"] is False

    table = run.table("eval/per_class_ap")
    assert len(table["data"]) == 600
    assert table["columns"][:6] == ["hoi", "class", "verb", "object", "rare", "num_gt"]
    assert {"ap_official", "ap_fgahoi", "ap_known_object_fgahoi"} <= set(table["columns"])
    row = dict(zip(table["columns"], table["data"][0]))
    assert row["class"] == f"{row['verb']} {row['object']}" and row["rare"] is True  # class 0: 3 training pairs
    assert sum(r[5] for r in table["data"]) > 0  # num_gt of the scored layouts
    assert len(run.table("eval/map_table")["data"]) == 2  # one line per protocol

    assert assert_role_boxes(run, "eval/gallery", {"ground_truth", "detections"}) == 3
    detections = run.boxes("eval/gallery")[0]["detections"]
    assert len(detections) == 9 and all("score" in box["scores"] for box in detections)  # top 3 × 3 roles
    assert run.config["eval.protocols"] == ["official", "fgahoi"] and run.config["row"] == "tiny600"


def test_two_job_multirun_is_one_group_with_runs_named_by_the_sweep(tmp_path, hicodet, monkeypatch):
    """The real-images row (no generation) swept over two rows: one wandb group, names from the overrides."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_eval(tmp_path, hicodet, "row=ra,rb", "eval.real_images=true", "wandb_group=null",
             f"hydra.sweep.dir={tmp_path}/logs/eval/sweep/multiruns/s1", multirun=True)
    runs = [read_offline_run(f) for f in find_offline_runs(tmp_path / "logs" / "eval" / "sweep")]
    assert all(r.finished for r in runs) and sorted(r.name for r in runs) == ["row=ra", "row=rb"]
    assert {r.group for r in runs} == {"sweep/s1"}
    assert all("model:interactdiffusion" in r.tags for r in runs)
    assert all(len(r.table("eval/per_class_ap")["data"]) == 600 for r in runs)


def test_training_samples_and_periodic_eval(tmp_path, monkeypatch):
    """Training sample grids as native box overlays; the periodic eval's per-class table and mAP curve."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    overrides = [o for o in FAST if o != "~callbacks.image_grid"] + paths(tmp_path, tmp_path / "shared")
    run_cli(overrides + [
        "trainer.max_steps=1", "logger=wandb", "callbacks=[default,hoi_eval]",
        "callbacks.image_grid.every_n_steps=1", "callbacks.image_grid.num_scenes=2",
        "callbacks.image_grid.num_inference_steps=2",
        "detector@callbacks.hoi_eval.detector=random", "callbacks.hoi_eval.every_n_steps=1",
        "callbacks.hoi_eval.num_layouts=2", "callbacks.hoi_eval.num_inference_steps=2",
    ])
    (run_dir,) = run_dirs(tmp_path)
    (folder,) = find_offline_runs(run_dir)
    run = read_offline_run(folder)
    assert run.finished
    assert (run_dir / "samples" / "step_0000001.png").is_file()  # the rendered grid stays
    boxes = run.boxes("samples/images")
    assert [set(image) for image in boxes] == [{"layout"}, {"ground_truth"}] * 2  # generated beside real
    for group in ("layout", "ground_truth"):
        assert run.class_labels("samples/images", group) == ROLE_CLASS_LABELS
        assert {ROLE_CLASS_LABELS[b["class_id"]] for image in boxes for b in image.get(group, [])} == ROLES
    assert len(run.table("eval/per_class_ap")["data"]) == 12  # the synthetic data set's 12 classes
    steps = [row for row in run.history if "eval/map_default_full" in row]
    assert steps and steps[0]["trainer/global_step"] == 1
    assert run.config["recipe.lr"] == 1e-4 and "model:interactdiffusion" in run.tags


def test_dashboard_layout_is_built_offline_and_saving_needs_a_login(tmp_path, monkeypatch, capsys):
    from interactdiffusion.cli import dashboard
    from interactdiffusion.dashboards.workspace import build_workspace

    workspace = build_workspace("my-team", "interactdiffusion")
    model = workspace._to_model()  # the saved view's spec, built without the server
    sections = model.spec.section.panel_bank_config.sections
    assert [s.name for s in sections] == ["Training", "HOI mAP", "Samples", "Eval tables"]
    assert dashboard.main(["project=interactdiffusion", "entity=my-team", "--print"]) == 0
    layout = capsys.readouterr().out
    for key in ("train/loss", "train/lr", "train/grad_norm", "eval/map_default_full", "samples/images",
                "eval/gallery", "eval/per_class_ap", "eval/map_table", "summary:eval/fgahoi/map_default_full"):
        assert key in layout, key

    for name in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert dashboard.main(["project=interactdiffusion", "entity=my-team"]) == dashboard.EXIT_BAD_INPUT
    assert "not logged in" in capsys.readouterr().err
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert dashboard.main(["project=interactdiffusion", "entity=my-team"]) == dashboard.EXIT_BAD_INPUT
    assert "WANDB_MODE=offline" in capsys.readouterr().err
    assert dashboard.main(["project=interactdiffusion"]) == dashboard.EXIT_BAD_INPUT
    assert "missing entity=" in capsys.readouterr().err


def test_table_rows_share_one_wandb_group():
    """`make reproduce-table` / the HOI-Shapes table: every row composes to the table's group."""
    from hydra import compose, initialize_config_dir

    from interactdiffusion.config_path import config_dir
    from interactdiffusion.utils import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        for table, group in (("paper/sd14", "paper-table"), ("paper/real", "paper-table"),
                             ("shapes/interactdiffusion", "hoi-shapes-table")):
            cfg = compose("eval", overrides=[f"table={table}", "logger=wandb"])
            assert cfg.logger.wandb.group == group and cfg.logger.wandb.name == cfg.row
        cfg = compose("eval", overrides=["logger=wandb", "row=mine"])
        assert cfg.logger.wandb.group == "mine"
