"""The walkthrough notebook runs top to bottom (scene → image → detection → score)."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "scene_to_score.ipynb"


def test_scene_to_score_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("HOI_SHAPES_DIR", str(tmp_path / "hoi-shapes"))
    monkeypatch.setenv("NOTEBOOK_SCENES", "4")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(
        out.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
    )
    assert "real test images (ceiling)" in outputs and "Default Full" in outputs
