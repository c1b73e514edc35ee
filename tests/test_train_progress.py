"""The bare training command is a short run, and its progress bar counts the run's steps."""

from __future__ import annotations

import torch
from hydra import compose, initialize_config_dir
from lightning import LightningModule, Trainer
from torch.utils.data import DataLoader, TensorDataset

from interactdiffusion.config_path import config_dir
from interactdiffusion.training.progress import StepProgressBar
from interactdiffusion.utils import register_resolvers


def test_the_bare_train_command_is_a_short_run():
    register_resolvers()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="train")
        paper = compose(config_name="train", overrides=["experiment=paper/interactdiffusion"])
    assert 0 < cfg.trainer.max_steps <= 100
    assert cfg.backbone.kind == "tiny"
    assert paper.trainer.max_steps == 250000


class _Linear(LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(tmp_path, max_steps: int, ckpt_path=None) -> tuple[StepProgressBar, Trainer]:
    bar = StepProgressBar()
    trainer = Trainer(max_steps=max_steps, max_epochs=-1, callbacks=[bar], logger=False, default_root_dir=tmp_path,
                      enable_model_summary=False, accelerator="cpu")
    data = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=2)  # 4 batches an epoch
    trainer.fit(_Linear(), data, ckpt_path=ckpt_path)
    return bar, trainer


def test_the_bar_counts_steps_of_the_run_not_batches_of_an_epoch(tmp_path):
    bar, trainer = _fit(tmp_path, 10)
    description, completed, total = bar.bar_state()
    assert (completed, total) == (10, 10)
    assert "-2" not in description and "epoch 2" in description
    trainer.save_checkpoint(tmp_path / "mid.ckpt")
    bar, _ = _fit(tmp_path, 14, ckpt_path=tmp_path / "mid.ckpt")  # resumed mid-epoch: never more than the total
    _, completed, total = bar.bar_state()
    assert (completed, total) == (14, 14)


def test_a_run_prints_neither_the_config_tree_nor_adverts(tmp_path, capfd):
    """The ~190-line config tree and third-party adverts/deprecations are behind extras.* flags."""
    from train_helpers import FAST, paths, run_cli

    quiet = [o for o in FAST if not o.startswith("extras.")] + ["trainer.max_steps=1"]
    run_cli(quiet + paths(tmp_path, tmp_path / "shared"))
    output = "".join(capfd.readouterr())
    assert "litlogger" not in output and "is deprecated" not in output
    assert "CONFIG" not in output
    (run,) = (tmp_path / "logs" / "train" / "tiny_synthetic" / "runs").glob("*")
    assert "backbone" in (run / "config_tree.log").read_text()  # still saved beside the run


BAD_TRAIN_SETTINGS = {
    "data.batch_size=-1": "setting 'data.batch_size' must be a positive integer, got -1",
    "data.batch_size=0": "setting 'data.batch_size' must be a positive integer, got 0",
    "recipe.lr=abc": "setting 'recipe.lr' must be a number, got 'abc'",
    "ckpt_path=/nonexistent/last.ckpt": "ckpt_path=/nonexistent/last.ckpt: no such checkpoint",
}


def test_bad_settings_are_one_line_errors_with_exit_2_before_the_model_is_built(tmp_path, capsys, monkeypatch):
    import pytest
    from train_helpers import FAST, paths, run_cli

    import interactdiffusion.training.module as module

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built before the settings were checked")

    monkeypatch.setattr(module.InteractDiffusionModule, "__init__", no_model)
    for override, message in BAD_TRAIN_SETTINGS.items():
        with pytest.raises(SystemExit) as exit_:
            run_cli(FAST + paths(tmp_path, tmp_path / "shared") + [override])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (override, err)


def test_a_training_folder_of_unreadable_images_is_one_message_naming_it(tmp_path, capsys):
    import pytest
    from train_helpers import FAST, paths, run_cli

    from interactdiffusion.data.synthetic import ensure_synthetic_hicodet

    root = ensure_synthetic_hicodet(tmp_path / "shared" / "data" / "synthetic", num_train=48, num_test=16, seed=0)
    train_dir = root / "images" / "train2015"
    for image in train_dir.iterdir():
        image.write_bytes(b"not a jpeg")
    with pytest.raises(SystemExit) as exit_:
        run_cli(FAST + paths(tmp_path, tmp_path / "shared") + ["trainer.max_steps=1", "data.latent_cache=false"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert str(train_dir) in err and "could not be read" in err
