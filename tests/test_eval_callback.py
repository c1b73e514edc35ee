"""``HOIEvalCallback`` inside a real (2-step) training run, composed from the real configs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """paths.data_dir with the synthetic HICO-DET where configs/data/synthetic.yaml expects it."""
    from interactdiffusion.data.synthetic import write_synthetic_hicodet

    root = tmp_path_factory.mktemp("data")
    write_synthetic_hicodet(root / "synthetic", num_train=8, num_test=6, formats=("mat",))
    return root


def compose_train(tmp_path: Path, data_dir: Path, overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from interactdiffusion.config_path import config_dir
    from interactdiffusion.utils import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("train", return_hydra_config=True, overrides=[
            f"paths.root_dir={tmp_path}",
            f"paths.data_dir={data_dir}",
            "data=synthetic",
            "data.synthetic=null",
            "data.batch_size=2",
            "data.resolution=32",
            "trainer=cpu",
            "trainer.max_steps=2",
            "trainer.log_every_n_steps=1",
            "trainer.enable_model_summary=false",
            "logger=csv",
            "extras.print_config=false",
            *overrides,
        ])
        HydraConfig().set_config(cfg)  # keeps its own copy of cfg.hydra
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "run")
            cfg.paths.work_dir = str(tmp_path)
            del cfg.hydra  # as in a real run, where the job's config has no hydra node
    return cfg


@pytest.mark.filterwarnings("ignore::UserWarning")  # KID's subset shrinks to the 3 images
def test_callback_evaluates_during_training_and_logs(tmp_path, data_dir):
    from interactdiffusion.cli.train import train
    from interactdiffusion.training.eval_callback import HOIEvalCallback

    cfg = compose_train(tmp_path, data_dir, [
        "callbacks=hoi_eval",  # not in the default list: an experiment (or this) switches it on
        "detector@callbacks.hoi_eval.detector=random",
        "+metrics@callbacks.hoi_eval.metrics=tiny",
        "callbacks.hoi_eval.every_n_steps=2",
        "callbacks.hoi_eval.num_layouts=3",
        "callbacks.hoi_eval.num_inference_steps=2",
        "callbacks.hoi_eval.protocols=[fgahoi,official]",
        "callbacks.hoi_eval.save_images=true",
    ])
    metrics, objects = train(cfg)
    callback = next(c for c in objects["trainer"].callbacks if isinstance(c, HOIEvalCallback))

    # once at step 2 (every_n_steps), not again at the end of the same step
    assert [h["step"] for h in callback.history] == [2]
    assert callback.history[0]["num_layouts"] == 3
    for key in ("eval/map_default_full", "eval/map_default_rare", "eval/map_known_object_full",
                "eval/official/map_default_full", "eval/fid", "eval/kid_mean"):
        assert key in metrics, key
    assert 0.0 <= float(metrics["eval/map_default_full"]) <= 100.0

    run = Path(cfg.paths.output_dir)
    summary = json.loads((run / "hoi_eval" / "step_0000002.json").read_text())
    assert set(summary["map"]) == {"fgahoi", "official"}
    assert len(list((run / "hoi_eval" / "step_0000002").glob("*.png"))) == 3
    rows = list(csv.DictReader((run / "csv" / "metrics.csv").open()))
    logged = [r for r in rows if r.get("eval/map_default_full")]
    assert logged and logged[0]["step"] == "2"
