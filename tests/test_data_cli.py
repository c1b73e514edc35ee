"""``interactdiffusion-data``: stats, layout export, synthetic data; run as the console script does."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from interactdiffusion.cli.data import main
from interactdiffusion.data.synthetic import write_synthetic_hicodet
from interactdiffusion.scene import read_scenes


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERACTDIFFUSION_CACHE_DIR", str(tmp_path / "cache"))
    return write_synthetic_hicodet(tmp_path / "syn", num_train=20, num_test=8, write_images=False)


def test_stats_prints_the_counts(data, capsys):
    assert main(["stats", "--annotations", str(data.anno_bbox_mat), "--split", "test"]) == 0
    out = capsys.readouterr().out
    pairs = sum(len(r.pairs) for r in data.test_records)
    assert f"images 8 / non-empty images 7 / pairs {pairs}" in out
    assert f"rare classes {int(data.vocab.rare_mask().sum())} " in out and "pairs per image: 0: 1" in out


def test_stats_json_same_for_every_format(data, capsys):
    results = []
    for path in (data.anno_bbox_mat, data.test_hico, data.instances_test):
        assert main(["stats", "--annotations", str(path), "--split", "test", "--json"]) == 0
        results.append(json.loads(capsys.readouterr().out))
    keys = ("images", "non_empty_images", "pairs", "classes_present", "rare_classes", "pairs_per_image")
    assert [{k: r[k] for k in keys} for r in results] == [{k: results[0][k] for k in keys}] * 3


def test_export_layouts(data, tmp_path, capsys):
    out = tmp_path / "layouts.jsonl"
    assert main(["export-layouts", "--annotations", str(data.instances_test), "--split", "test", "--out", str(out)]) == 0
    assert "wrote 7 layouts (1 images without visible pairs left out)" in capsys.readouterr().out
    scenes = read_scenes(out)
    non_empty = [r for r in data.test_records if r.pairs]
    assert [s.id for s in scenes] == [r.file_name[:-4] for r in non_empty]
    for scene, record in zip(scenes, non_empty):
        assert scene.extra["file_name"] == record.file_name
        assert (scene.extra["original_width"], scene.extra["original_height"]) == (record.width, record.height)
        assert len(scene.extra["gt_pairs"]) == len(record.pairs)
        gt = scene.extra["gt_pairs"][0]
        assert gt["hoi"] == record.pairs[0].hoi and gt["human_box"] == list(record.pairs[0].human_box)
        # boxes normalised by the ORIGINAL size (the square image is the original squashed)
        by_box = {tuple(i.subject_box) for i in scene.interactions}
        x1, y1, x2, y2 = record.pairs[0].human_box
        assert (x1 / record.width, y1 / record.height, x2 / record.width, y2 / record.height) in by_box
        assert scene.caption.startswith("a person is ")


def test_bad_file_is_a_clean_error(tmp_path, capsys):
    bad = tmp_path / "notes.txt"
    bad.write_text("nothing to see")
    assert main(["stats", "--annotations", str(bad), "--no-cache"]) == 2
    assert "accepted formats" in capsys.readouterr().err


def test_make_synthetic_and_console_script(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "interactdiffusion.cli.data", "make-synthetic", "--out", str(tmp_path / "s"),
         "--num-train", "4", "--num-test", "4"],
        capture_output=True, text=True, check=True,
    )
    assert "4 train / 4 test images, 12 classes" in result.stdout
    assert (tmp_path / "s" / "anno_bbox.mat").is_file()
    help_text = subprocess.run([sys.executable, "-m", "interactdiffusion.cli.data", "--help"],
                               capture_output=True, text=True, check=True).stdout
    for command in ("stats", "export-layouts", "make-synthetic"):
        assert command in help_text


def test_make_synthetic_refuses_a_non_empty_folder(tmp_path, capsys):
    folder = tmp_path / "hico"
    folder.mkdir()
    (folder / "anno_bbox.mat").write_bytes(b"the real annotations")
    assert main(["make-synthetic", "--out", str(folder), "--num-train", "2", "--num-test", "2"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (folder / "anno_bbox.mat").read_bytes() == b"the real annotations"
    assert main(["make-synthetic", "--out", str(folder), "--num-train", "2", "--num-test", "2", "--overwrite"]) == 0
    assert (folder / "anno_bbox.mat").read_bytes() != b"the real annotations"
