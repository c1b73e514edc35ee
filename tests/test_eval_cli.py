"""``interactdiffusion-eval`` end to end: tiny backbone, random-init detector, tiny feature extractor, a
small synthetic HICO-DET in tmp_path, 32² images, 2 denoising steps; through the real Hydra entry point."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from interactdiffusion.evaluation.report import RESULTS_KEYS, check_results

NUM_TEST = 6  # one synthetic test image has no visible pair: 5 layouts


@pytest.fixture(scope="module")
def hicodet(tmp_path_factory) -> Path:
    from interactdiffusion.data.synthetic import write_synthetic_hicodet

    root = tmp_path_factory.mktemp("hicodet")
    write_synthetic_hicodet(root, num_train=24, num_test=NUM_TEST, formats=("mat",))
    return root


def run_eval(root: Path, hicodet: Path, out: Path, *overrides: str) -> int:
    """Run ``interactdiffusion-eval`` in this process; returns the exit code."""
    from interactdiffusion.cli.eval import main

    argv = [
        "interactdiffusion-eval",
        "eval=tiny",
        f"paths.root_dir={root}",
        f"data.annotations={hicodet / 'anno_bbox.mat'}",
        f"data.image_dir={hicodet / 'images' / 'test2015'}",
        "data.synthetic=null",
        f"output_dir={out}",
        f"hydra.run.dir={out}/runs/run",
        "extras.print_config=false",
        "eval.batch_size=8",
        *overrides,
    ]
    old = sys.argv
    sys.argv = argv
    try:
        main()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    finally:
        sys.argv = old
    return 0


class OracleDetector:
    """Returns, image by image in the order asked, the GT pairs it was given: scores 100 on every class
    with GT, but only if the command scores detections against GT in the same pixel space."""

    name = "oracle"

    def __init__(self, per_image):
        self.per_image = list(per_image)

    def detect(self, images, sizes):
        from interactdiffusion.evaluation.detectors import HOIDetection

        out = []
        for image, size in zip(images, sizes):
            record = self.per_image.pop(0)
            assert tuple(size) == (record.width, record.height) and tuple(image.shape[1:]) == (size[1], size[0])
            out.append([HOIDetection(p.human_box, p.object_box, p.hoi, 1.0) for p in record.pairs])
        return out


def use_oracle(monkeypatch, records) -> None:
    from interactdiffusion.evaluation.detectors import registry

    monkeypatch.setitem(registry._REGISTRY, "oracle", lambda **_: OracleDetector(records))


def assert_perfect(out: Path) -> None:
    for protocol in ("official", "fgahoi"):
        classes = json.loads((out / f"map_{protocol}.json").read_text())["per_class"]
        with_gt = [c for c in classes if c["num_gt"]]
        assert with_gt and all(c["ap"] == pytest.approx(100.0) for c in with_gt), protocol


def read_results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def png_times(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (out / "images").glob("*.png")}


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_end_to_end_results_table_and_limit(tmp_path, hicodet):
    out = tmp_path / "row"
    assert run_eval(tmp_path, hicodet, out, "eval.limit=4", "row=tiny_row", "label=Tiny row") == 0

    results = read_results(out)
    check_results(results)
    assert list(results) == list(RESULTS_KEYS)
    assert results["row"] == "tiny_row" and results["label"] == "Tiny row"
    assert results["num_layouts"] == 4 and results["num_images"] == 4  # eval.limit: the first 4 layouts
    assert len(png_times(out)) == 4
    assert results["resolution"] == 32 and results["backbone"] == "tiny"
    assert results["detector"] == {"name": "qpic_random", "weights": None}
    assert results["metrics_extractor"].startswith("tiny")
    assert results["meaningful"] is False
    assert results["device"] == "cpu" and results["settings"]["precision"] == "fp32"  # auto on the CPU
    assert results["settings"]["seed"] == 489 and results["settings"]["scheduler"] == "plms"
    for value in (results["fid"], results["kid_mean"], results["kid_std"]):
        assert isinstance(value, float)
    assert set(results["map"]) == {"official", "fgahoi"}
    for protocol in results["map"].values():
        for setting in ("default", "known_object"):
            assert set(protocol[setting]) == {"full", "rare", "non_rare"}
            assert all(v is None or 0.0 <= v <= 100.0 for v in protocol[setting].values())
    assert set(results["wall_time_s"]) == {"generate", "detect", "metrics", "total"}

    # the GT was rescaled to the generated size, the detections are in those pixels
    lines = [json.loads(line) for line in (out / "detections.jsonl").read_text().splitlines()]
    assert lines and {line["file_name"] for line in lines} <= {f"HICO_test2015_{k:08d}.jpg" for k in range(1, 7)}
    assert all(0.0 <= v <= 32.0 for line in lines for v in line["human_box"] + line["object_box"])
    per_class = json.loads((out / "map_fgahoi.json").read_text())["per_class"]
    assert sum(c["num_gt"] for c in per_class) > 0

    table = (out / "results.md").read_text()
    for column in ("FID", "KID", "Default Full", "Default Rare", "Default Non-rare", "Known Object Full",
                   "Known Object Rare", "Known Object Non-rare", "qpic_random", "official", "fgahoi", "meaningless"):
        assert column in table

    # the numbers went to the configured logger (csv)
    csv_files = list((out / "runs" / "run").rglob("metrics.csv"))
    assert csv_files
    header = csv_files[0].read_text().splitlines()[0].split(",")
    assert {"eval/fid", "eval/fgahoi/map_default_full", "eval/official/map_known_object_rare"} <= set(header)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_resume_image_by_image_and_row_by_row(tmp_path, hicodet):
    out = tmp_path / "row"
    assert run_eval(tmp_path, hicodet, out, "eval.limit=3") == 0
    first = png_times(out)
    assert len(first) == 3

    # a crash after two images: the third image and the results are missing; a leftover temp file too
    lost = sorted(first)[-1]
    (out / "images" / lost).unlink()
    (out / "images" / f".{lost}.999.tmp").write_bytes(b"half an image")
    (out / "results.json").unlink()
    assert run_eval(tmp_path, hicodet, out, "eval.limit=3") == 0
    second = png_times(out)
    regenerated = [name for name, t in second.items() if first.get(name) != t]
    assert regenerated == [lost]
    assert json.loads((out / "run.json").read_text())["generated_this_run"] == 1
    assert read_results(out)["num_images"] == 3

    # a finished row is skipped: nothing is generated or rewritten
    results_time = (out / "results.json").stat().st_mtime_ns
    assert run_eval(tmp_path, hicodet, out, "eval.limit=3") == 0
    assert (out / "results.json").stat().st_mtime_ns == results_time
    assert png_times(out) == second

    # other settings in the same row folder: an error, not a silent mix
    assert run_eval(tmp_path, hicodet, out, "eval.limit=3", "eval.steps=3") == 2
    # ... unless asked to evaluate again: stale images are regenerated
    assert run_eval(tmp_path, hicodet, out, "eval.limit=3", "eval.steps=3", "eval.overwrite=true") == 0
    assert read_results(out)["settings"]["steps"] == 3
    assert all(second[name] != t for name, t in png_times(out).items())


def save_tiny_adapter(path: Path, gate: float) -> Path:
    """An InteractDiffusion adapter for backbone=tiny whose open gates make it change the images."""
    import torch

    from interactdiffusion.models.backbone import build_tiny_backbone
    from interactdiffusion.models.checkpoints import save_adapter
    from interactdiffusion.models.unet import adapter_named_parameters

    backbone = build_tiny_backbone(seed=0)
    with torch.no_grad():
        for name, param in adapter_named_parameters(backbone.unet):
            if "alpha" in name:
                param.fill_(gate)
    return save_adapter(backbone.unet, path, config={"kind": "interactdiffusion"})


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_weights_replaced_under_the_same_path_are_not_reused(tmp_path, hicodet):
    """Re-publishing an adapter under its old name (as `make demo`'s committed one) is other settings:
    without overwrite the row is refused; with it, the old adapter's images are regenerated."""
    weights = save_tiny_adapter(tmp_path / "adapter", gate=0.8)
    out = tmp_path / "row"
    args = ("eval.limit=2", f"weights={weights}")
    assert run_eval(tmp_path, hicodet, out, *args) == 0
    first = png_times(out)
    assert read_results(out)["settings"]["weights_sha256"].startswith("sha256:")

    assert save_tiny_adapter(tmp_path / "adapter", gate=0.3) == weights
    assert run_eval(tmp_path, hicodet, out, *args) == 2
    assert run_eval(tmp_path, hicodet, out, *args, "eval.overwrite=true") == 0
    assert all(first[name] != t for name, t in png_times(out).items()) and len(first) == 2


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_generated_images_are_scored_against_rescaled_gt(tmp_path, hicodet, monkeypatch):
    """A detector that finds the rescaled GT exactly gets AP 100 on every class: GT and detections meet
    in the generated image's pixels (REFERENCE §5)."""
    from interactdiffusion.data.annotations import load_annotations
    from interactdiffusion.evaluation.scoring import generated_ground_truth

    records = load_annotations(hicodet / "anno_bbox.mat", "test", cache_dir=False).non_empty()[:3]
    use_oracle(monkeypatch, generated_ground_truth(records, 32))
    out = tmp_path / "row"
    assert run_eval(tmp_path, hicodet, out, "eval.limit=3", "detector.kind=oracle") == 0
    assert_perfect(out)
    assert read_results(out)["detector"]["name"] == "oracle"

    # the row's layouts.jsonl + detections.jsonl score the same with interactdiffusion-hoi-eval
    import shlex

    from interactdiffusion.cli.hoi_eval import main as hoi_eval

    command = json.loads((out / "run.json").read_text())["rescore"]
    assert hoi_eval(shlex.split(command)[1:]) == 0
    rescored = json.loads((out / "rescored.json").read_text())
    assert rescored["default"] == json.loads((out / "map_fgahoi.json").read_text())["default"]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_real_images_row(tmp_path, hicodet, monkeypatch):
    from interactdiffusion.data.annotations import load_annotations

    out = tmp_path / "real"
    assert run_eval(tmp_path, hicodet, out, "eval.real_images=true", "row=real") == 0
    results = read_results(out)
    check_results(results)
    # every test image (Default setting), also the one without a visible pair; 5 of them have a layout
    assert results["num_layouts"] == NUM_TEST - 1 and results["num_images"] == NUM_TEST
    assert results["fid"] is None and results["kid_mean"] is None  # "–" in the paper's table
    assert not (out / "images").exists()  # nothing generated
    # detections are in the original image's pixels (the GT is used as is)
    lines = [json.loads(line) for line in (out / "detections.jsonl").read_text().splitlines()]
    assert max(max(line["human_box"][2], line["object_box"][2]) for line in lines) > 32.0
    assert "–" in (out / "results.md").read_text()

    # the real images are scored at their own size against the GT as it is
    use_oracle(monkeypatch, load_annotations(hicodet / "anno_bbox.mat", "test", cache_dir=False).records)
    out = tmp_path / "real_oracle"
    assert run_eval(tmp_path, hicodet, out, "eval.real_images=true", "row=real", "detector.kind=oracle") == 0
    assert_perfect(out)


def test_bad_settings_exit_with_a_message(tmp_path, hicodet, capsys):
    assert run_eval(tmp_path, hicodet, tmp_path / "row", "eval.protocols=[matlab]") == 2
    assert "eval.protocols" in capsys.readouterr().err
    assert run_eval(tmp_path, hicodet, tmp_path / "row", f"data.annotations={tmp_path / 'missing.mat'}") == 2
    assert "missing.mat" in capsys.readouterr().err
    # missing detector / Inception weights are found before anything is generated
    out = tmp_path / "row"
    assert run_eval(tmp_path, hicodet, out, "detector=qpic", "metrics=inception", f"paths.weights_dir={tmp_path / 'w'}") == 2
    err = capsys.readouterr().err
    assert "qpic_resnet50_hico.pth" in err and "weights-inception-2015-12-05-6726825d.pth" in err
    assert not (out / "images").exists()


# -- the pieces ------------------------------------------------------------------------------------
def test_layouts_rescaled_gt_and_known_object_source(tmp_path, hicodet):
    """Layouts in file order; GT rescaled to the generated size and truncated; anno.mat only for official."""
    import numpy as np
    from PIL import Image
    from scipy.io import savemat

    from interactdiffusion.data.annotations import load_annotations
    from interactdiffusion.evaluation.detectors import build_detector
    from interactdiffusion.evaluation.generation import make_layouts
    from interactdiffusion.evaluation.image_io import pil_to_uint8
    from interactdiffusion.evaluation.scoring import detect_images, generated_ground_truth, score_map

    annotations = load_annotations(hicodet / "anno_bbox.mat", "test", cache_dir=False)
    layouts = make_layouts(annotations.records, annotations.vocab, 32, limit=2)
    assert [layout.record.file_name for layout in layouts] == [r.file_name for r in annotations.non_empty()[:2]]
    record = layouts[0].record
    gt = generated_ground_truth([layout.record for layout in layouts], 32)
    assert all(r.width == r.height == 32 for r in gt)
    # x' = int(x * 32 / W) on the 0-based pixel index; continuous boxes keep the +1 on x2, y2
    x1 = record.pairs[0].human_box[0]
    assert gt[0].pairs[0].human_box[0] == float(int(32 * x1 / record.width))
    assert all(float(v).is_integer() for r in gt for p in r.pairs for v in p.human_box + p.object_box)

    anno_mat = tmp_path / "anno.mat"
    names = np.array([r.file_name for r in annotations.records], dtype=object)
    savemat(anno_mat, {"anno_test": np.ones((annotations.vocab.num_classes, len(names))), "list_test": names})
    images = [pil_to_uint8(Image.new("RGB", (32, 32), (60 * k, 90, 160))) for k in range(len(layouts))]
    detector = build_detector("qpic_random", vocabulary=annotations.vocab, device="cpu", min_size=64, max_size=128)
    detections = detect_images(detector, images, [(32, 32)] * len(images))
    scores = score_map(gt, detections, annotations.vocab, ["official", "fgahoi"], str(anno_mat))
    assert scores["official"]["settings"]["known_object_source"] == "anno_mat"
    assert scores["fgahoi"]["settings"]["known_object_source"] == "gt_objects"


def test_shards_split_the_layouts_and_read_the_launcher(monkeypatch):
    from interactdiffusion.evaluation.sharding import Shard

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"):
        monkeypatch.delenv(name, raising=False)
    assert Shard.from_env() == Shard(0, 1, 0)
    assert Shard.from_env({"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1"}) == Shard(3, 4, 1)
    assert Shard.from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == Shard(1, 2, 1)
    items = list(range(7))
    shares = [Shard(r, 3).take(items) for r in range(3)]
    assert sorted(sum(shares, [])) == items and max(map(len, shares)) - min(map(len, shares)) <= 1


def test_rank_zero_stops_waiting_when_another_rank_failed(tmp_path):
    import time

    from interactdiffusion.evaluation.sharding import Shard, ShardError, wait_for_files

    since = time.time()
    Shard(1, 2).mark(tmp_path, "failed", "CUDA out of memory")
    with pytest.raises(ShardError, match="rank 1 failed.*out of memory"):
        wait_for_files([tmp_path / "never.png"], Shard(0, 2), tmp_path, since=since, poll_s=0.01)
    with pytest.raises(ShardError, match="still missing"):
        wait_for_files([tmp_path / "never.png"], Shard(0, 2), tmp_path / "no-markers", since=since,
                       timeout_s=0.05, poll_s=0.01)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_two_ranks_share_the_generation(tmp_path, hicodet, monkeypatch):
    """Rank 1 draws its share and leaves; rank 0 draws the rest, finds every image, scores the row."""
    out = tmp_path / "row"
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert run_eval(tmp_path, hicodet, out, "eval.limit=4") == 0
    assert len(png_times(out)) == 2 and not (out / "results.json").exists()
    assert (out / "shards" / "rank-0001-of-0002.done").exists()
    monkeypatch.setenv("RANK", "0")
    assert run_eval(tmp_path, hicodet, out, "eval.limit=4") == 0
    results = read_results(out)
    assert results["num_images"] == 4 and len(png_times(out)) == 4
    info = json.loads((out / "run.json").read_text())
    assert info["world_size"] == 2 and info["generated_this_run"] == 2


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_official_image_files_and_known_object_labels(tmp_path, hicodet):
    """eval.image_format=jpg + truncate: <file_name>.jpg at quality 75, recorded in results.json; without
    anno.mat the official Known Object falls back to the GT objects and results.md says so."""
    from PIL import Image

    out = tmp_path / "jpg"
    jpg = ["eval.limit=2", "eval.image_format=jpg", "eval.quantize=truncate", "eval.jpeg_quality=75"]
    assert run_eval(tmp_path, hicodet, out, *jpg) == 0
    names = sorted(p.name for p in (out / "images").iterdir() if p.suffix in (".jpg", ".png"))
    assert names == ["HICO_test2015_00000001.jpg", "HICO_test2015_00000003.jpg"]
    with Image.open(out / "images" / names[0]) as image:
        assert image.format == "JPEG"
    settings = read_results(out)["settings"]
    assert (settings["image_format"], settings["jpeg_quality"], settings["quantize"]) == ("jpg", 75, "truncate")
    generation = json.loads((out / "images" / "generation.json").read_text())
    assert generation["image_format"] == "jpg" and generation["quantize"] == "truncate"
    assert "Known Object (`official`) used the objects of each image's GT" in (out / "results.md").read_text()

    labelled = tmp_path / "labelled"
    assert run_eval(tmp_path, hicodet, labelled, "eval.limit=2", f"data.anno_mat={hicodet / 'anno.mat'}") == 0
    assert "Warning" not in (labelled / "results.md").read_text()
    assert json.loads((labelled / "map_official.json").read_text())["settings"]["known_object_source"] == "anno_mat"
    missing = tmp_path / "missing"
    assert run_eval(tmp_path, hicodet, missing, "eval.limit=2", f"data.anno_mat={tmp_path / 'no' / 'anno.mat'}") == 2


def test_a_bad_row_leaves_no_folder_and_cannot_leave_logs(tmp_path, hicodet, capsys, monkeypatch):
    from interactdiffusion.cli.eval import main

    def eval_cli(*overrides: str) -> int:
        monkeypatch.setattr(sys, "argv", ["interactdiffusion-eval", "eval=tiny", f"paths.root_dir={tmp_path}",
                                          f"data.annotations={hicodet / 'anno_bbox.mat'}", "data.synthetic=null",
                                          "extras.print_config=false", *overrides])
        try:
            main()
        except SystemExit as exit_:
            return int(exit_.code or 0)
        return 0

    assert eval_cli("row=../../x") == 2
    assert "row='../../x'" in capsys.readouterr().err
    assert eval_cli("row=a/b") == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written, inside logs/ or out of it
    assert eval_cli("row=typo", "eval.protocols=[matlab]") == 2
    assert "eval.protocols" in capsys.readouterr().err
    assert not (tmp_path / "logs" / "eval" / "typo").exists()  # the run folder Hydra made is gone
