"""`make demo` end to end on a small budget: committed HOI-Shapes weights, a short training, generation, eval."""

from __future__ import annotations

import json
import re

import pytest

from interactdiffusion.cli import demo
from interactdiffusion.reproduce.toy import COMMITTED_ADAPTERS, COMMITTED_BACKBONE


@pytest.mark.skipif(not (COMMITTED_BACKBONE / "unet" / "config.json").is_file()
                    or not (COMMITTED_ADAPTERS / "interactdiffusion.safetensors").is_file(),
                    reason="the committed HOI-Shapes weights are not in this checkout")
def test_demo_runs_the_main_job_on_the_committed_weights(tmp_path, capsys):
    assert demo.main(["--out", str(tmp_path / "demo"), "--data-dir", str(tmp_path / "data"),
                      "--steps", "2", "--scenes", "4", "--layouts", "6"]) == 0
    out = capsys.readouterr().out
    assert "| InteractDiffusion (committed) |" in out and "| caption-only backbone |" in out
    assert "wandb offline run (training): " in out and "none (logger" not in out
    # the offline wandb runs, read back: boxes per role in the training samples and the eval gallery, the table
    assert re.search(r"samples/images: \d+ images with box groups \['ground_truth', 'layout'\], "
                     r"roles \['action', 'object', 'subject'\]", out)
    assert "eval/gallery: 6 images with box groups ['detections', 'ground_truth'], roles ['action', 'object', 'subject']" in out
    assert "eval/per_class_ap: table of 22 rows" in out and "upload it with: wandb sync " in out
    root = tmp_path / "demo"
    assert (root / "train" / "export" / "adapter.safetensors").is_file()
    assert (root / "grid.png").is_file() and len(list((root / "images").glob("*_boxes.png"))) == 4
    for row in ("interactdiffusion", "caption_only"):
        results = json.loads((root / "eval" / row / "results.json").read_text())
        assert results["num_images"] == 6 and results["detector"]["name"]
