"""Detections as columns from the detector to the evaluator (``ImageDetections``), the JSONL schema in
``--help``, and a warning when a detection file scores nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interactdiffusion.cli.hoi_eval import main
from interactdiffusion.data.synthetic import write_synthetic_hicodet
from interactdiffusion.evaluation.detections_io import DetectionsWriter, write_detections_jsonl
from interactdiffusion.evaluation.detectors import HOIDetection, ImageDetections, as_image_detections
from interactdiffusion.evaluation.detectors.qpic import QPICOutputs, hoi_lookup_table, qpic_postprocess
from interactdiffusion.evaluation.hoi_map import DetectionArrays


def objects(n: int, seed: int = 0) -> list[HOIDetection]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x, y = rng.uniform(0, 50, 2)
        out.append(HOIDetection((x, y, x + 10.5, y + 3.25), (y, x, y + 1.0, x + 7.0), int(rng.integers(0, 12)),
                                float(rng.uniform())))
    return out


def test_columns_read_as_detections_and_give_the_same_arrays_and_lines(tmp_path):
    per_image = [objects(5, 0), [], objects(3, 1)]
    columns = [as_image_detections(d) for d in per_image]
    assert all(isinstance(c, ImageDetections) for c in columns)
    assert [list(c) for c in columns] == per_image and columns[0][1:3] == per_image[0][1:3]
    a, b = DetectionArrays.from_per_image(per_image), DetectionArrays.from_per_image(columns)
    for name in ("image", "hoi", "human_boxes", "object_boxes", "scores"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    names = ["a.jpg", "b.jpg", "c.jpg"]
    write_detections_jsonl(tmp_path / "objects.jsonl", zip(names, per_image))
    with DetectionsWriter(tmp_path / "columns.jsonl", append=False) as writer:
        for name, dets in zip(names, columns):
            writer.write(name, dets)
    assert (tmp_path / "columns.jsonl").read_bytes() == (tmp_path / "objects.jsonl").read_bytes()


def test_qpic_returns_columns():
    from interactdiffusion.vocab import HOIVocabulary

    vocab = HOIVocabulary.from_action_list([("bicycle", "ride", "riding"), ("horse", "ride", "riding")])
    generator = torch.Generator().manual_seed(0)
    outputs = QPICOutputs(torch.randn(2, 6, 81, generator=generator), torch.randn(2, 6, 1, generator=generator),
                          torch.rand(2, 6, 4, generator=generator) * 0.5 + 0.25,
                          torch.rand(2, 6, 4, generator=generator) * 0.5 + 0.25)
    found = qpic_postprocess(outputs, [(64, 48), (32, 32)], hoi_lookup_table(vocab, 80), top_k=4)
    assert all(isinstance(d, ImageDetections) for d in found)
    assert found[0].human_boxes.dtype == np.float64 and found[0].hoi.dtype == np.int64


def test_help_documents_the_schema_and_empty_detections_warn(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = capsys.readouterr().out
    for fragment in ("0-based HOI class", "continuous 0-based pixels", "[x1 - 1, y1 - 1, x2, y2]"):
        assert fragment in help_text
    data = write_synthetic_hicodet(tmp_path / "hico", num_train=8, num_test=4, write_images=False)
    (tmp_path / "empty.jsonl").write_text("")
    code = main(["--no-cache", "--gt", str(data.anno_bbox_mat), "--detections", str(tmp_path / "empty.jsonl"),
                 "--protocol", "fgahoi", "--out", str(tmp_path / "r.json")])
    assert code == 0
    assert "every mAP is 0" in capsys.readouterr().err
