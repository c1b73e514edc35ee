"""``interactdiffusion-hoi-eval`` end to end on the synthetic HICO-DET, and the detection files."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from interactdiffusion.cli.hoi_eval import main
from interactdiffusion.data.layouts import layout_scenes
from interactdiffusion.data.synthetic import write_synthetic_hicodet
from interactdiffusion.evaluation.detections_io import (
    DetectionFormatError,
    DetectionsWriter,
    read_detections_jsonl,
    write_detection_arrays,
    write_detections_jsonl,
)
from interactdiffusion.evaluation.detectors.base import HOIDetection
from interactdiffusion.evaluation.hoi_map import DetectionArrays, rescale_ground_truth
from interactdiffusion.scene import write_scenes_jsonl

SPLITS = ("full", "rare", "non_rare")


@pytest.fixture(scope="module")
def hico(tmp_path_factory):
    root = tmp_path_factory.mktemp("hico")
    data = write_synthetic_hicodet(root, num_train=48, num_test=16, write_images=False)
    layouts = root / "layouts.jsonl"
    write_scenes_jsonl(layout_scenes(data.test_records, data.vocab), layouts)
    return data, layouts


def perfect_detections(records) -> dict[str, list[HOIDetection]]:
    return {
        r.file_name: [HOIDetection(p.human_box, p.object_box, p.hoi, 0.9 - 0.01 * k) for k, p in enumerate(r.pairs)]
        for r in records
    }


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main(["--no-cache", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def gt_files(data, layouts):
    return {
        "mat": data.anno_bbox_mat,
        "qpic": data.test_hico,
        "instances": data.instances_test,
        "layouts": layouts,
    }


@pytest.mark.parametrize("protocol", ["official", "fgahoi"])
def test_every_gt_format_gives_the_same_results(hico, tmp_path, capsys, protocol):
    data, layouts = hico
    dets = perfect_detections(data.test_records)
    # one imperfect class so the numbers are not all 100: a FP above every TP of class 0
    first = next(r for r in data.test_records if r.pairs)
    dets[first.file_name].append(HOIDetection((0.0, 0.0, 4.0, 4.0), (0.0, 0.0, 4.0, 4.0), 0, 0.99))
    det_file = tmp_path / "dets.jsonl"
    write_detections_jsonl(det_file, dets)
    results = {}
    for name, gt in gt_files(data, layouts).items():
        out = tmp_path / f"{name}.json"
        extra = ["--vocabulary", data.vocabulary_json] if name in ("layouts", "qpic") else []
        code, stdout, stderr = run_cli(capsys, "--gt", gt, "--detections", det_file, "--protocol", protocol,
                                       "--out", out, *extra)
        assert code == 0, stderr
        assert "Known Object" in stdout and str(out) in stdout
        results[name] = json.loads(out.read_text())
    reference = results["mat"]
    assert reference["protocol"] == protocol
    assert reference["default"]["full"] < 100.0
    assert reference["per_class"][1]["ap"] == pytest.approx(100.0)
    for name, other in results.items():
        for setting in ("default", "known_object"):
            assert other[setting] == reference[setting], name
        assert other["per_class"] == reference["per_class"], name


def test_results_file_is_strict_json_with_the_documented_keys(hico, tmp_path, capsys):
    data, _ = hico
    det_file = tmp_path / "dets.jsonl"
    write_detections_jsonl(det_file, {data.test_records[0].file_name: []})  # no detections at all
    out = tmp_path / "results.json"
    code, _, stderr = run_cli(capsys, "--gt", data.anno_bbox_mat, "--detections", det_file,
                              "--protocol", "fgahoi", "--out", out)
    assert code == 0, stderr
    results = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    for key in ("protocol", "default", "known_object", "per_class", "num_images", "num_detections"):
        assert key in results
    for setting in ("default", "known_object"):
        assert set(results[setting]) == set(SPLITS)
    row = results["per_class"][0]
    assert set(row) >= {"hoi", "ap", "recall", "num_gt", "num_det", "rare"}
    assert results["num_images"] == len(data.test_records) and results["num_detections"] == 0


def test_gt_size_rescales_the_ground_truth_to_generated_images(hico, tmp_path, capsys):
    data, layouts = hico
    generated = rescale_ground_truth([r for r in data.test_records if r.pairs], (512, 512))
    det_file = tmp_path / "dets.jsonl"
    write_detections_jsonl(det_file, perfect_detections(generated))
    out = tmp_path / "results.json"
    args = ["--gt", layouts, "--vocabulary", data.vocabulary_json, "--detections", det_file, "--out", out]
    code, _, stderr = run_cli(capsys, *args, "--protocol", "fgahoi", "--gt-size", 512, 512)
    assert code == 0, stderr
    results = json.loads(out.read_text())
    assert results["default"]["full"] == pytest.approx(100.0) and results["gt_size"] == [512, 512]
    code, _, _ = run_cli(capsys, *args, "--protocol", "fgahoi")  # the same boxes against the original GT
    assert json.loads(out.read_text())["default"]["full"] < 50.0


def test_verb_object_lines_and_the_validity_mask(hico, tmp_path, capsys):
    data, _ = hico
    vocab = data.vocab
    by_hoi = tmp_path / "hoi.jsonl"
    write_detections_jsonl(by_hoi, perfect_detections(data.test_records))
    lines = []
    for k, text in enumerate(by_hoi.read_text().splitlines()):
        item = json.loads(text)
        c = vocab.classes[item.pop("hoi")]
        item["verb"] = vocab.verbs[c.verb] if k % 2 else c.verb
        item["object"] = vocab.objects[c.object] if k % 3 else c.object
        lines.append(json.dumps(item))
    bicycle, kick = vocab.object_index("bicycle"), vocab.verb_index("kick")
    assert not vocab.has_pair(kick, bicycle)
    lines.append(json.dumps({"file_name": data.test_records[0].file_name, "verb": "kick", "object": "bicycle",
                             "human_box": [0, 0, 5, 5], "object_box": [0, 0, 5, 5], "score": 1.0}))
    by_pair = tmp_path / "pairs.jsonl"
    by_pair.write_text("\n".join(lines) + "\n")
    outputs = {}
    for name, path in (("hoi", by_hoi), ("pair", by_pair)):
        out = tmp_path / f"{name}.json"
        code, stdout, stderr = run_cli(capsys, "--gt", data.anno_bbox_mat, "--detections", path,
                                       "--protocol", "official", "--out", out)
        assert code == 0, stderr
        outputs[name] = json.loads(out.read_text())
    assert "1 detections with a verb-object pair outside the class list were dropped" in stdout
    assert outputs["pair"]["num_invalid_pairs_dropped"] == 1
    assert outputs["pair"]["per_class"] == outputs["hoi"]["per_class"]


GOOD = {"file_name": "HICO_test2015_00000001.jpg", "hoi": 1, "human_box": [0, 0, 10, 10],
        "object_box": [5, 5, 20, 20], "score": 0.5}


def bad(**changes) -> str:
    item = {**GOOD, **changes}
    return json.dumps({k: v for k, v in item.items() if v is not ...})


@pytest.mark.parametrize(
    "line, field",
    [
        ("{not json", "<json>"),
        ("[1, 2]", "<line>"),
        (bad(file_name=...), "file_name"),
        (bad(file_name=""), "file_name"),
        (bad(score="high"), "score"),
        (bad(score=True), "score"),
        ('{"file_name": "a.jpg", "hoi": 1, "human_box": [0, 0, 1, 1], "object_box": [0, 0, 1, 1], "score": NaN}', "score"),
        (bad(human_box=[0, 0, 10]), "human_box"),
        (bad(object_box=[0, 0, "1", 1]), "object_box"),
        (bad(human_box=[10, 0, 5, 10]), "human_box"),
        (bad(hoi=12), "hoi"),
        (bad(hoi="3"), "hoi"),
        (bad(hoi=...), "hoi"),
        (bad(hoi=..., verb="fly"), "object"),
        (bad(hoi=..., verb="juggle", object="kite"), "verb"),
        (bad(hoi=..., verb=0, object=99), "object"),
        (bad(hoi=2, verb="fly", object="kite"), "hoi"),
    ],
)
def test_bad_detection_lines_name_file_line_and_field(hico, tmp_path, capsys, line, field):
    data, _ = hico
    path = tmp_path / "dets.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + line + "\n" + json.dumps(GOOD) + "\n")
    with pytest.raises(DetectionFormatError) as err:
        read_detections_jsonl(path, data.vocab)
    assert err.value.line == 3 and err.value.field_name == field
    assert str(err.value).startswith(f"{path}:3: field {field!r}")
    code, _, stderr = run_cli(capsys, "--gt", data.anno_bbox_mat, "--detections", path, "--protocol", "fgahoi",
                              "--out", tmp_path / "r.json")
    assert code == 2 and f"{path}:3: field {field!r}" in stderr
    assert not (tmp_path / "r.json").exists()


def test_unknown_images_fail_unless_ignored_and_names_match_by_stem(hico, tmp_path, capsys):
    data, _ = hico
    dets = perfect_detections(data.test_records)
    renamed = {f"gen/{name.replace('.jpg', '.png')}": d for name, d in dets.items()}
    renamed["not_in_gt.png"] = [HOIDetection((0, 0, 5, 5), (0, 0, 5, 5), 0, 0.1)]
    path = tmp_path / "dets.jsonl"
    write_detections_jsonl(path, renamed)
    out = tmp_path / "r.json"
    args = ["--gt", data.anno_bbox_mat, "--detections", path, "--protocol", "official", "--out", out]
    code, _, stderr = run_cli(capsys, *args)
    assert code == 2 and "'not_in_gt.png' is not a GT image" in stderr and "field 'file_name'" in stderr
    code, stdout, _ = run_cli(capsys, *args, "--ignore-unknown-images")
    assert code == 0 and "1 detected images are not in the GT" in stdout
    results = json.loads(out.read_text())
    assert results["unknown_images"] == ["not_in_gt.png"]
    assert results["default"]["full"] == pytest.approx(100.0)


def test_anno_mat_supplies_known_object_images_for_the_official_protocol(hico, tmp_path, capsys):
    from scipy.io import savemat

    data, _ = hico
    records, vocab = data.test_records, data.vocab
    labels = -np.ones((vocab.num_classes, len(records)))
    names = np.empty((len(records), 1), dtype=object)
    for k, r in enumerate(records):
        names[k, 0] = r.file_name
        for p in r.pairs:
            labels[p.hoi, k] = 1.0
    savemat(tmp_path / "anno.mat", {"anno_test": labels, "list_test": names})
    path = tmp_path / "dets.jsonl"
    write_detections_jsonl(path, perfect_detections(records))
    out = tmp_path / "r.json"
    code, _, stderr = run_cli(capsys, "--gt", data.anno_bbox_mat, "--detections", path, "--protocol", "official",
                              "--out", out, "--anno-mat", tmp_path / "anno.mat")
    assert code == 0, stderr
    results = json.loads(out.read_text())
    assert results["settings"]["known_object_source"] == "anno_mat"
    assert results["known_object"]["full"] == pytest.approx(100.0)


def test_layouts_need_a_vocabulary(hico, tmp_path, capsys):
    _, layouts = hico
    path = tmp_path / "dets.jsonl"
    path.write_text("")
    code, _, stderr = run_cli(capsys, "--gt", layouts, "--detections", path, "--protocol", "official",
                              "--out", tmp_path / "r.json")
    assert code == 2 and "pass --vocabulary" in stderr


def test_the_module_runs_as_a_command():
    done = subprocess.run([sys.executable, "-m", "interactdiffusion.cli.hoi_eval", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--protocol" in done.stdout


# -- detection files --------------------------------------------------------------------------------------
def test_detection_files_round_trip_to_the_bit(hico, tmp_path):
    data, _ = hico
    rng = np.random.default_rng(0)
    n = 50
    arrays = DetectionArrays(
        rng.integers(0, len(data.test_records), n), rng.integers(0, data.vocab.num_classes, n),
        np.sort(rng.uniform(0, 500, (n, 4)).reshape(n, 2, 2), axis=1).reshape(n, 4),
        np.sort(rng.uniform(0, 500, (n, 4)).reshape(n, 2, 2), axis=1).reshape(n, 4), rng.random(n),
    )
    names = [r.file_name for r in data.test_records]
    path = tmp_path / "d.jsonl"
    assert write_detection_arrays(path, arrays, names) == n
    back = read_detections_jsonl(path, data.vocab).to_arrays(names)
    for field in ("image", "hoi", "human_boxes", "object_boxes", "scores"):
        assert np.array_equal(getattr(back, field), getattr(arrays, field)), field


def test_writer_appends_image_by_image(tmp_path, hico):
    data, _ = hico
    path = tmp_path / "d.jsonl"
    one = [HOIDetection((0.0, 0.0, 1.5, 2.0), (1.0, 1.0, 3.0, 3.0), 2, 0.25)]
    with DetectionsWriter(path, append=False) as writer:
        assert writer.write("a.jpg", one) == 1
    with DetectionsWriter(path) as writer:
        writer.write("b.jpg", one + one)
    table = read_detections_jsonl(path, data.vocab)
    assert table.file_names == ["a.jpg", "b.jpg", "b.jpg"] and table.lines.tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="non-finite"):
        write_detections_jsonl(tmp_path / "x.jsonl", {"a.jpg": [HOIDetection((0, 0, 1, 1), (0, 0, 1, 1), 0, float("inf"))]})
