"""Every training config composes (experiment glob smoke test), and the run-directory rules hold."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from interactdiffusion.config_path import config_dir
from interactdiffusion.utils.resolvers import register_resolvers, run_name

CONFIGS = Path(config_dir())
register_resolvers()


def _options(group: str) -> list[str]:
    """Every config of a group, sub-folders included (``paper/interactdiffusion``)."""
    return sorted(str(p.relative_to(CONFIGS / group).with_suffix("")) for p in (CONFIGS / group).rglob("*.yaml"))


def _compose(overrides: list[str], hydra_cfg: bool = False):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=hydra_cfg)


def _resolve(cfg) -> dict:
    """Resolve everything except ${hydra:...} (no Hydra run is active in a compose)."""
    cfg = cfg.copy()
    cfg.paths.output_dir = "/tmp/out"
    cfg.paths.work_dir = "/tmp"
    return OmegaConf.to_container(cfg, resolve=True)


EXPERIMENTS = _options("experiment")


@pytest.mark.parametrize("row", _options("table"))
def test_every_table_row_composes_in_eval_only(row):
    """Eval rows are their own group (``table=``): eval composes each; training knows none of them, so a
    row cannot be typed into ``interactdiffusion-train experiment=`` by mistake."""
    from hydra.errors import HydraException

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose("eval", overrides=[f"table={row}"])
    assert cfg.row not in (None, "default") and "trainer" not in cfg
    assert not any(e.startswith("table") for e in EXPERIMENTS)
    with pytest.raises(HydraException):
        _compose([f"table={row}"])


def test_the_paper_runs_and_every_ablation_have_an_experiment():
    for name in ("paper/interactdiffusion", "paper/interactdiffusion_v1_1", "paper/gligen_star"):
        assert name in EXPERIMENTS
    models = {p.stem for p in (CONFIGS / "model").glob("ablation_*.yaml")}
    assert {f"ablation/{m.removeprefix('ablation_')}" for m in models} <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment):
    cfg = _resolve(_compose([f"experiment={experiment}"]))
    assert cfg["name"] != "default"
    assert cfg["trainer"]["_target_"].endswith("Trainer")
    assert cfg["data"]["_target_"].endswith(("HICODataModule", "HOIShapesDataModule"))
    assert cfg["backbone"]["kind"] in ("tiny", "diffusers", "tiny_xl", "sdxl")


def test_paper_v1_0_is_the_papers_recipe():
    cfg = _resolve(_compose(["experiment=paper/interactdiffusion"]))
    assert cfg["backbone"]["name"] == "sd14"
    assert cfg["data"]["batch_size"] * cfg["trainer"]["devices"] * cfg["trainer"]["accumulate_grad_batches"] == 16
    assert cfg["trainer"]["max_steps"] == 250_000 and cfg["trainer"]["precision"] == "16-mixed"
    recipe = cfg["recipe"]
    assert (recipe["lr"], recipe["weight_decay"], recipe["warmup_steps"]) == (5e-5, 0.0, 10_000)
    assert (recipe["caption_drop_prob"], recipe["grounding_drop_prob"], recipe["ema_decay"]) == (0.5, 0.1, None)
    v11 = _resolve(_compose(["experiment=paper/interactdiffusion_v1_1"]))
    assert v11["backbone"]["name"] == "sd15"
    assert v11["data"]["batch_size"] * v11["trainer"]["devices"] * v11["trainer"]["accumulate_grad_batches"] == 32
    assert _resolve(_compose(["experiment=paper/gligen_star"]))["model"]["grounding"]["kind"] == "gligen"


@pytest.mark.parametrize(
    "group", ["trainer", "logger", "callbacks", "debug", "hparams_search"]
)
def test_every_option_of_the_groups_composes(group):
    for option in _options(group):
        _resolve(_compose([f"{group}={option}"]))


def test_ddp_sim_is_two_cpu_processes_on_gloo():
    trainer = _resolve(_compose(["trainer=ddp_sim"]))["trainer"]
    assert trainer["accelerator"] == "cpu" and trainer["devices"] == 2
    assert trainer["strategy"]["process_group_backend"] == "gloo"


def test_slurm_launcher_follows_the_trainer():
    cfg = _compose(["launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=3"], hydra_cfg=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes) == (4, 4, 3)


def test_run_directories_never_collide_and_are_shared_by_launcher_processes(monkeypatch):
    for var in ("INTERACTDIFFUSION_RUN_NAME", "SLURM_NTASKS", "SLURM_JOB_ID", "WORLD_SIZE", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    names = {run_name() for _ in range(200)}
    assert len(names) == 200
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    assert run_name() == run_name() == "slurm-4242.0"
    monkeypatch.delenv("SLURM_NTASKS")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "abc")
    assert run_name() == "torchrun-abc"
    cfg = _compose([], hydra_cfg=True)
    assert "/train/default/runs/" in cfg.hydra.run.dir


def test_optional_local_config_is_gitignored():
    ignored = (CONFIGS.parent / ".gitignore").read_text()
    assert "configs/local/default.yaml" in ignored


def test_every_ablation_has_a_hoi_shapes_run_that_differs_from_full_interactdiffusion_only_in_its_switch():
    """experiment=shapes/ablation/<x> = experiment=shapes/interactdiffusion with model.grounding.<switch> changed."""
    full = _resolve(_compose(["experiment=shapes/interactdiffusion"]))
    ablations = sorted(p.stem.removeprefix("ablation_") for p in (CONFIGS / "model").glob("ablation_*.yaml"))
    assert ablations and all(f"shapes/ablation/{a}" in EXPERIMENTS for a in ablations)
    for ablation in ablations:
        cfg = _resolve(_compose([f"experiment=shapes/ablation/{ablation}"]))
        paper = _resolve(_compose([f"model=ablation_{ablation}"]))["model"]["grounding"]
        changed = {k for k, v in cfg["model"]["grounding"].items() if full["model"]["grounding"].get(k) != v}
        switch = {k for k, v in paper.items() if _resolve(_compose([]))["model"]["grounding"].get(k) != v}
        assert changed == switch and len(switch) == 1, ablation  # the paper ablation's one switch, nothing else
        assert cfg["model"]["grounding"]["hidden_dim"] == 128 and cfg["model"]["grounding"]["max_interactions"] == 4
        assert {k: v for k, v in cfg.items() if k not in ("model", "name", "tags")} == {
            k: v for k, v in full.items() if k not in ("model", "name", "tags")}
        assert cfg["name"] == f"shapes_ablation_{ablation}"


def test_hoi_shapes_gligen_shares_the_interactdiffusion_budget_and_recipe():
    """The table's two rows differ only in the adapter: same steps, recipe (gate rate included) and callbacks."""
    full = _resolve(_compose(["experiment=shapes/interactdiffusion"]))
    gligen = _resolve(_compose(["experiment=shapes/gligen"]))
    assert gligen["model"]["grounding"]["kind"] == "gligen" != full["model"]["grounding"]["kind"]
    assert full["recipe"]["gate_lr_scale"] == 10 and _resolve(_compose([]))["recipe"]["gate_lr_scale"] == 1
    assert {k: v for k, v in gligen.items() if k not in ("model", "name")} == {
        k: v for k, v in full.items() if k not in ("model", "name")}


def test_the_readme_ablation_multirun_trains_the_same_models_as_the_experiments():
    """`-m experiment=shapes/interactdiffusion model=shapes_<row>` = `experiment=shapes/<row>` but for name and tags."""
    models = sorted(p.stem for p in (CONFIGS / "model").glob("shapes_*.yaml"))
    swept_line = next(line for line in (CONFIGS.parent / "README.md").read_text().splitlines()
                      if "model=shapes_interactdiffusion,shapes_gligen," in line)
    assert sorted(swept_line.split("model=")[1].split(",")) == models  # the README sweeps every row
    for model in models:
        kind = model.removeprefix("shapes_").replace("ablation_", "ablation/", 1)
        swept = _resolve(_compose(["experiment=shapes/interactdiffusion", f"model={model}"]))
        own = _resolve(_compose([f"experiment=shapes/{kind}"]))
        assert {k for k in set(swept) | set(own) if swept.get(k) != own.get(k)} <= {"name", "tags"}, model
