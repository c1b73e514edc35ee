"""The grounding probe (``evaluation.grounding_probe``) on HOI-Shapes test scenes and an adapter export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.annotations import load_annotations
from ..data.layouts import layout_scene


def load_test_scenes(data_root: str | Path, num_scenes: int, max_interactions: int) -> tuple[list, torch.Tensor]:
    """The first ``num_scenes`` annotated test scenes of a HOI-Shapes folder and their images (uint8 [B, 3, S, S])."""
    root = Path(data_root)
    parsed = load_annotations(root / "anno_bbox.mat", "test", cache_dir=False)
    scenes, images = [], []
    for record in parsed.records:
        scene = layout_scene(record, parsed.vocab, record.width, max_interactions)
        if scene is None:
            continue
        path = root / "images" / "test2015" / record.file_name
        try:
            with Image.open(path) as im:
                images.append(np.asarray(im.convert("RGB")))
        except OSError as error:
            raise OSError(f"{path}: cannot read the test image of record {record.file_name!r}: {error}") from error
        scenes.append(scene)
        if len(scenes) == num_scenes:
            break
    if len(scenes) < 2:
        raise ValueError(f"{root}: the probe needs at least two annotated test scenes, found {len(scenes)}")
    return scenes, torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def probe_adapter(
    adapter: str | Path,
    backbone: str | Path,
    data_root: str | Path,
    num_scenes: int = 96,
    timesteps: tuple[int, ...] = (950, 800, 600),
    seed: int = 0,
) -> dict[str, dict[int, dict[str, float]]]:
    """``{"captions": ..., "no_captions": ...}``: the probe's losses with and without the scene captions."""
    from ..evaluation.grounding_probe import probe_grounding
    from ..models.backbone import load_diffusers_backbone
    from ..pipeline import load_pipeline

    pipe, _ = load_pipeline(load_diffusers_backbone(backbone), adapter)
    max_n = getattr(pipe.unet.position_net, "max_interactions", 30)
    scenes, images = load_test_scenes(data_root, num_scenes, max_n)
    return {
        name: probe_grounding(pipe, scenes, images, timesteps, captions=captions, seed=seed)
        for name, captions in (("captions", True), ("no_captions", False))
    }
