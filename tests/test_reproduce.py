"""`make reproduce-table`: rows compose, the dry run names every missing input, the aggregation has every column."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from interactdiffusion.cli.reproduce import DEFAULT_ROWS, compose_row, main
from interactdiffusion.reproduce.aggregate import aggregate
from interactdiffusion.reproduce.paper_numbers import ROW_ORDER

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("row", ROW_ORDER)
def test_every_table_row_composes_as_an_eval_run(row, tmp_path):
    cfg = compose_row(row, [f"paths.data_dir={tmp_path}/data", f"paths.weights_dir={tmp_path}/w"])
    assert cfg["row"] == row
    xl = row == "interactdiffusion_xl"  # the official XL pipeline's settings at 1024²
    assert cfg["eval"]["steps"] == 50 and cfg["eval"]["guidance_scale"] == (5.0 if xl else 7.5)
    assert cfg["eval"]["seed"] == 489 and cfg["eval"]["beta"] == 1.0
    assert cfg["eval"]["scheduler"] == ("euler" if xl else "plms") and cfg["eval"]["resolution"] == (1024 if xl else 512)
    if xl:
        assert cfg["backbone"]["kind"] == "sdxl" and cfg["model"]["grounding"]["max_interactions"] == 32
        assert cfg["eval"]["negative_prompt"] is None
    assert cfg["eval"]["real_images"] == (row == "real")
    # the official batch inference's files: <file_name>.jpg at PIL's quality 75, truncated to uint8
    assert (cfg["eval"]["image_format"], cfg["eval"]["jpeg_quality"], cfg["eval"]["quantize"]) == ("jpg", 75, "truncate")
    assert cfg["data"]["anno_mat"] == f"{tmp_path}/data/hico_20160224_det/anno.mat"
    if row in ("gligen", "gligen_star"):
        assert cfg["model"]["grounding"]["kind"] == "gligen"
    if row == "sd14":
        assert cfg["weights"] is None and cfg["backbone"]["name"] == "sd14"


def test_dry_run_lists_every_missing_input_with_its_path(tmp_path, capsys):
    data, weights = tmp_path / "data", tmp_path / "w"
    assert main(["--dry-run", f"paths.data_dir={data}", f"paths.weights_dir={weights}"]) == 0
    out = capsys.readouterr().out
    expected = [
        data / "hico_20160224_det" / "anno_bbox.mat",
        data / "hico_20160224_det" / "anno.mat",
        data / "hico_20160224_det" / "images" / "test2015",
        weights / "stable-diffusion-v1-4",
        weights / "gligen-1-4-generation-text-box",
        weights / "gligen_star" / "adapter.safetensors",
        weights / "interact-diffusion-v1.pth",
        weights / "fgahoi_swin_tiny_hico.pth",
        weights / "fgahoi_swin_large_hico.pth",
        weights / "weights-inception-2015-12-05-6726825d.pth",
    ]
    for path in expected:
        line = next((text for text in out.splitlines() if str(path) in text), None)
        assert line is not None and "MISSING" in line, path
    assert "0 present, 10 missing." in out
    # every row scored by both FGAHOI detectors, each in its own folder
    assert out.count("interactdiffusion.cli.eval table=paper/") == 2 * len(DEFAULT_ROWS)
    assert out.count("detector=fgahoi_swin_t") == out.count("detector=fgahoi_swin_l") == len(DEFAULT_ROWS)
    assert "xiaomabufei/FGAHOI" in out
    # 4 generating rows x 9,546 layouts (the annotations are not here to count them)
    assert "about 38,184" in out


def test_present_inputs_are_reported_present(tmp_path, capsys):
    weights = tmp_path / "w"
    (weights / "stable-diffusion-v1-4").mkdir(parents=True)
    (weights / "qpic_resnet50_hico.pth").write_bytes(b"x")
    main(["--dry-run", "--rows", "sd14", "--detectors", "qpic", f"paths.data_dir={tmp_path}/d",
          f"paths.weights_dir={weights}"])
    out = capsys.readouterr().out
    assert "[present] backbone sd14" in out and "[present] detector qpic weights" in out
    assert "2 present, 4 missing." in out


def _fake_row(root: Path, row: str, meaningful: bool = True, detector: str = "qpic") -> None:
    split = {"full": 10.0, "rare": 5.0, "non_rare": 12.0}
    result = {
        "row": row, "label": None, "backbone": "sd14", "weights": None,
        "detector": {"name": detector, "weights": f"/w/{detector}.pth"}, "metrics_extractor": "inception",
        "num_layouts": 3, "num_images": 3, "resolution": 512, "fid": 20.0, "kid_mean": 0.01, "kid_std": 0.001,
        "map": {p: {"default": split, "known_object": split} for p in ("official", "fgahoi")},
        "wall_time_s": {"generate": 1.0, "detect": 1.0, "metrics": 1.0, "total": 180.0}, "device": "cpu",
        "settings": {}, "meaningful": meaningful,
    }
    folder = root / row / detector
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(result))


def test_aggregation_has_every_column_of_the_paper_plus_non_rare(tmp_path):
    for row in ("real", "sd14", "interactdiffusion_xl", "interactdiffusion"):
        _fake_row(tmp_path / "rows", row)
    md, js = aggregate(tmp_path / "rows", tmp_path / "out", command="make reproduce-table")
    text = md.read_text()
    for column in ("FID", "KID", "Default Full (qpic)", "Default Rare (qpic)", "Default Non-Rare (qpic)",
                   "Known Object Full (qpic)", "Known Object Rare (qpic)", "Known Object Non-Rare (qpic)",
                   "paper Default Full/Rare (FGAHOI-Swin-T)", "wall time", "device"):
        assert column in text
    assert "not comparable" in text and "meaningless" not in text
    assert "29.53/23.02" in text  # the paper's InteractDiffusion Swin-T Default Full/Rare
    assert "| 16.65 | 0.00560 | 35.60/– (Swin-L) |" in text  # InteractDiffusion-XL: only Swin-L Full published
    rows = [r["row"] for r in json.loads(js.read_text())["rows"]]
    assert rows == ["sd14", "interactdiffusion", "interactdiffusion_xl", "real"]  # the paper's order


def test_each_detector_gets_its_tables_beside_its_paper_columns(tmp_path):
    for row in ("interactdiffusion", "real"):
        for detector in ("fgahoi_swin_t", "fgahoi_swin_l"):
            _fake_row(tmp_path / "rows", row, detector=detector)
    md, js = aggregate(tmp_path / "rows", tmp_path / "out")
    sections = {part.split("\n", 1)[0]: part for part in md.read_text().split("## ")[1:]}
    swin_t = sections["fgahoi_swin_t, `fgahoi` protocol (ours) vs FGAHOI-Swin-T, `fgahoi` (paper)"]
    swin_l = sections["fgahoi_swin_l, `fgahoi` protocol (ours) vs FGAHOI-Swin-L, `fgahoi` (paper)"]
    assert "29.53/23.02" in swin_t and "31.56/26.09" not in swin_t and "29.94/22.24" in swin_t
    assert "31.56/26.09" in swin_l and "37.18/30.71" in swin_l and "29.53/23.02" not in swin_l
    assert list(sections).index("fgahoi_swin_t, `official` protocol (ours) vs FGAHOI-Swin-T, `fgahoi` (paper)") == 0
    text = md.read_text()
    assert "Default Full (fgahoi_swin_l)" in text
    assert len(json.loads(js.read_text())["rows"]) == 4


def test_detector_runs_of_a_row_share_its_images(tmp_path):
    from interactdiffusion.cli.reproduce import share_row_images

    row_dir = tmp_path / "eval" / "gligen"
    for detector in ("fgahoi_swin_t", "fgahoi_swin_l"):
        share_row_images(row_dir, row_dir / detector)
        share_row_images(row_dir, row_dir / detector)  # again: nothing to do
    (row_dir / "fgahoi_swin_t" / "images" / "0.png").write_bytes(b"png")
    assert (row_dir / "images" / "0.png").read_bytes() == b"png"
    assert (row_dir / "fgahoi_swin_l" / "images" / "0.png").read_bytes() == b"png"
    (row_dir / "other" / "images").mkdir(parents=True)
    with pytest.raises(RuntimeError, match="not the row's image folder"):
        share_row_images(row_dir, row_dir / "other")


def test_aggregation_says_when_numbers_are_meaningless(tmp_path):
    _fake_row(tmp_path / "rows", "sd14", meaningful=False)
    md, _ = aggregate(tmp_path / "rows", tmp_path / "out")
    assert "meaningless" in md.read_text()


@pytest.mark.slow
def test_tiny_profile_runs_the_whole_table_through_make(tmp_path):
    env = {**os.environ, "INTERACTDIFFUSION_TINY_DIR": str(tmp_path / "work")}
    out = tmp_path / "table"
    subprocess.run(
        ["make", "reproduce-table", "PROFILE=tiny", "ROWS=sd14,gligen,gligen_star,interactdiffusion,"
         "interactdiffusion_ours,real", f"ARGS=--out {out} eval.image_format=jpg eval.quantize=truncate"],
        cwd=REPO, env=env, check=True,
    )
    data = json.loads((out / "results.json").read_text())
    # the paper's image files when asked: <file_name>.jpg, truncated, recorded with every row
    images = list((tmp_path / "work" / "logs").rglob("images/HICO_test2015_*"))
    assert images and {p.suffix for p in images} == {".jpg"}
    row = json.loads(next((tmp_path / "work" / "logs").rglob("interactdiffusion/fgahoi_random/results.json")).read_text())
    assert (row["settings"]["image_format"], row["settings"]["quantize"]) == ("jpg", "truncate")
    assert row["settings"]["anno_mat"].endswith("synthetic/anno.mat")
    assert "Warning" not in next((tmp_path / "work" / "logs").rglob("interactdiffusion/fgahoi_random/results.md")).read_text()
    # every row scored by the tiny profile's two detectors (a small random FGAHOI, a random QPIC)
    assert [r["row"] for r in data["rows"]] == [row for row in ROW_ORDER if row != "interactdiffusion_xl" for _ in range(2)]
    assert {r["detector"]["name"] for r in data["rows"]} == {"fgahoi_random", "qpic_random"}
    assert all(not r["meaningful"] for r in data["rows"])
    assert "meaningless" in (out / "results.md").read_text()
