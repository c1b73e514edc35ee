"""HOI-Shapes training path: the space-to-depth autoencoder, caption-only backbone pre-training through the
train CLI, its export loading as a diffusers backbone, adapters on it, and the toy reproduce driver."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import run_cli

from interactdiffusion.models.backbone import build_backbone, check_backbone_folder, load_diffusers_backbone
from interactdiffusion.models.space_to_depth import (
    SpaceToDepthAutoencoder,
    downscale_factor,
    load_autoencoder,
)
from interactdiffusion.models.unet import is_adapter_key

REPO = Path(__file__).resolve().parents[1]

# A 2-step run on a 40-image HOI-Shapes; checkpoints but no grids and no periodic eval, quiet.
QUICK = [
    "trainer.max_steps=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "data.batch_size=4",
    "data.shapes.num_train=40",
    "data.shapes.num_test=10",
    "callbacks=model_checkpoint",
    "extras.print_config=false",
]


def _paths(root: Path) -> list[str]:
    return [f"paths.root_dir={root}", f"paths.data_dir={root / 'data'}", f"paths.cache_dir={root / 'cache'}"]


# -- the weightless autoencoder -------------------------------------------------------------------
def test_space_to_depth_is_lossless_and_speaks_the_vae_interface(tmp_path):
    vae = SpaceToDepthAutoencoder(downscale_factor=4, shift=0.4, scaling_factor=1.25)
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    posterior = vae.encode(images).latent_dist
    assert posterior.mean.shape == (3, 48, 8, 8)
    assert torch.equal(posterior.sample(), posterior.mean)  # deterministic: zero variance
    assert torch.allclose(vae.decode(posterior.mean).sample, images, atol=1e-6, rtol=0)  # float rounding only
    # a patch's 48 channels are exactly its 16 pixels (minus the shift)
    assert torch.allclose(posterior.mean[0, 0, 0, 0], images[0, 0, 0, 0] - 0.4)
    vae.save_pretrained(tmp_path / "vae")
    assert sorted(p.name for p in (tmp_path / "vae").iterdir()) == ["config.json"]
    loaded = load_autoencoder(tmp_path / "vae")
    assert isinstance(loaded, SpaceToDepthAutoencoder) and downscale_factor(loaded) == 4
    assert loaded.config.scaling_factor == 1.25 and loaded.config.shift == 0.4
    with pytest.raises(ValueError, match="not a multiple"):
        vae.encode(torch.zeros(1, 3, 30, 30))


def test_unknown_autoencoder_class_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "VQModel"}))
    with pytest.raises(ValueError, match="VQModel"):
        load_autoencoder(tmp_path)


# -- pre-training the backbone, then adapters on it ------------------------------------------------
@pytest.fixture(scope="module")
def trained_backbone(tmp_path_factory):
    """experiment=shapes/backbone for 2 steps through the CLI, exported."""
    root = tmp_path_factory.mktemp("toy_backbone")
    run_cli(["experiment=shapes/backbone", "export=true", *QUICK, *_paths(root)])
    runs = sorted((root / "logs" / "train" / "shapes_backbone" / "runs").glob("*"))
    assert len(runs) == 1
    return root, runs[0]


def test_backbone_mode_trains_the_unet_and_exports_a_backbone_folder(trained_backbone):
    root, run = trained_backbone
    folder = run / "export" / "backbone"
    assert check_backbone_folder(folder) == folder
    assert not (run / "export" / "adapter.safetensors").exists()
    saved = load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    assert saved and not any(is_adapter_key(k) for k in saved)
    assert {v.dtype for v in saved.values()} == {torch.float16}  # half on disk, float32 when loaded
    config = json.loads((folder / "unet" / "config.json").read_text())
    assert config["attention_type"] == "default" and config["in_channels"] == 48

    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=shapes/backbone", *_paths(root)])
    start = build_backbone(**{k: v for k, v in dict(cfg.backbone).items()}, grounding=dict(cfg.model.grounding))
    loaded = load_diffusers_backbone(folder, grounding=dict(cfg.model.grounding))
    assert loaded.unet.dtype == torch.float32 and loaded.text_encoder.dtype == torch.float32
    assert isinstance(loaded.vae, SpaceToDepthAutoencoder)
    trained = {k: v for k, v in loaded.unet.state_dict().items() if not is_adapter_key(k)}
    initial = start.unet.state_dict()
    changed = [k for k, v in trained.items() if not torch.allclose(v, initial[k].half().float())]
    assert len(changed) > len(trained) // 2  # the UNet itself trained
    # the text encoder is the frozen random one the run started from
    for k, v in start.text_encoder.state_dict().items():
        assert torch.equal(loaded.text_encoder.state_dict()[k], v.half().float()), k


def test_backbone_checkpoint_holds_the_unet_and_resumes_only_as_backbone(trained_backbone):
    from interactdiffusion.training.module import CheckpointMismatchError, InteractDiffusionModule

    _, run = trained_backbone
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    keys = list(ckpt["state_dict"])
    assert keys and all(k.startswith("unet.") and not is_adapter_key(k[5:]) for k in keys)
    assert ckpt["hyper_parameters"]["trainable"] == "backbone"
    hp = ckpt["hyper_parameters"]
    adapter_module = InteractDiffusionModule(hp["backbone"], hp["model"], {})
    with pytest.raises(CheckpointMismatchError, match="trains the adapter"):
        adapter_module.check_adapter_state(ckpt["state_dict"], hp)


def test_two_adapter_steps_on_hoi_shapes_through_the_cli(trained_backbone, tmp_path):
    """experiment=shapes/{interactdiffusion,gligen} on the exported backbone: adapter only, backbone frozen."""
    _, run = trained_backbone
    folder = run / "export" / "backbone"
    for kind in ("interactdiffusion", "gligen"):
        run_cli([f"experiment=shapes/{kind}", "export=true", f"backbone.path={folder}", *QUICK, *_paths(tmp_path)])
        runs = sorted((tmp_path / "logs" / "train" / f"shapes_{kind}" / "runs").glob("*"))
        exported = load_file(str(runs[-1] / "export" / "adapter.safetensors"))
        assert exported and all(is_adapter_key(k) for k in exported)
        assert ("position_net.linear_action.0.weight" in exported) == (kind == "interactdiffusion")
        assert (runs[-1] / "export" / "pipeline" / "vae" / "config.json").is_file()
        ckpt = torch.load(runs[-1] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        assert all(is_adapter_key(k[len("unet."):]) for k in ckpt["state_dict"])
    # the grounding probe reads that export on the run's own HOI-Shapes test split
    from interactdiffusion.cli.toy import main as toy_main

    out = tmp_path / "probe.json"
    adapter = sorted((tmp_path / "logs" / "train" / "shapes_interactdiffusion" / "runs").glob("*"))[-1] / "export" / "adapter.safetensors"
    assert toy_main(["probe", str(adapter), "--backbone", str(folder), "--data", str(tmp_path / "data" / "hoi-shapes"),
                     "--num-scenes", "4", "--timesteps", "900,300", "--json", str(out)]) == 0
    probe = json.loads(out.read_text())
    assert set(probe) == {"adapter", "captions", "no_captions"}
    for table in (probe["captions"], probe["no_captions"]):
        assert set(table) == {"900", "300"}
        assert all(set(row) == {"true", "boxes_moved", "shuffled", "null"} for row in table.values())
        assert all(0 < v < 10 for row in table.values() for v in row.values())


def test_exported_pipeline_with_space_to_depth_generates(trained_backbone, tmp_path):
    from interactdiffusion.pipeline import InteractDiffusionPipeline
    from interactdiffusion.scene import Scene

    _, run = trained_backbone
    backbone = load_diffusers_backbone(run / "export" / "backbone", grounding={"kind": "interactdiffusion", "hidden_dim": 128})
    pipe = InteractDiffusionPipeline.from_backbone(backbone)
    pipe.save_pretrained(tmp_path / "pipe")
    again = InteractDiffusionPipeline.from_pretrained(tmp_path / "pipe")
    assert isinstance(again.vae, SpaceToDepthAutoencoder) and again.vae_scale_factor == 4
    scene = Scene.from_dict({
        "prompt": "a person holding a cup", "width": 32, "height": 32,
        "interactions": [{"subject": "person", "action": "holding", "object": "cup",
                          "subject_box": [2, 4, 10, 20], "object_box": [18, 8, 26, 16]}],
    }, box_format="pixels")
    images = again(scenes=[scene], num_inference_steps=2, output_type="pil").images
    assert images[0].size == (32, 32)


def test_grounding_probe_sees_nothing_through_closed_gates_and_the_boxes_through_open_ones(trained_backbone):
    from interactdiffusion.evaluation.grounding_probe import move_boxes, probe_grounding
    from interactdiffusion.pipeline import InteractDiffusionPipeline
    from interactdiffusion.scene import Scene

    _, run = trained_backbone
    backbone = load_diffusers_backbone(
        run / "export" / "backbone", grounding={"kind": "interactdiffusion", "hidden_dim": 128, "visual_positions": True}
    )
    pipe = InteractDiffusionPipeline.from_backbone(backbone)
    boxes = ([2, 4, 10, 20], [18, 8, 26, 16]), ([20, 2, 30, 30], [1, 1, 9, 9]), ([8, 14, 16, 30], [20, 20, 30, 28])
    scenes = [
        Scene.from_dict({"id": str(k), "width": 32, "height": 32, "interactions": [
            {"subject": "person", "action": "holding", "object": "cup", "subject_box": sb, "object_box": ob}]},
            box_format="pixels")
        for k, (sb, ob) in enumerate(boxes)
    ]
    moved = move_boxes(scenes)
    assert [m.interactions[0].action for m in moved] == ["holding"] * 3
    assert moved[0].interactions[0].subject_box == scenes[1].interactions[0].subject_box
    images = (torch.rand(3, 3, 32, 32) * 255).to(torch.uint8)
    closed = probe_grounding(pipe, scenes, images, (900, 300))
    for row in closed.values():  # a fresh adapter (gates 0) leaves the UNet unchanged: every variant is equal
        assert len(set(row.values())) == 1
    for name, p in pipe.unet.named_parameters():
        if name.endswith("alpha_attn"):
            p.data.fill_(1.0)
    opened = probe_grounding(pipe, scenes, images, (900, 300))
    for row in opened.values():  # the same phrases on other boxes now change the prediction
        assert row["true"] != row["boxes_moved"] and row["true"] != row["null"]


# -- the toy reproduce driver ------------------------------------------------------------------------
def test_reproduce_toy_trains_evaluates_and_tabulates(trained_backbone, tmp_path):
    """make reproduce-table-toy on a 2-step budget: every job through the real CLIs, then the table."""
    from interactdiffusion.reproduce.toy import reproduce_toy

    _, run = trained_backbone
    folder = run / "export" / "backbone"
    common = [f"backbone.path={folder}", f"paths.cache_dir={tmp_path / 'cache'}", "extras.print_config=false"]
    train = [*common, "trainer.max_steps=2", "data.batch_size=4", "data.shapes.num_train=40",
             "data.shapes.num_test=10", "callbacks=none", "trainer.enable_progress_bar=false"]
    evaluation = [*common, "eval.limit=3", "eval.steps=2", "eval.batch_size=4"]
    kwargs = dict(seeds=[0], parallel=2, threads=1, results=tmp_path / "results.md", train_overrides=train,
                  eval_overrides=evaluation, data_dir=tmp_path / "data", command="make reproduce-table-toy (test)")
    target = reproduce_toy(tmp_path / "toy", **kwargs)
    text = target.read_text()
    for label in ("real HOI-Shapes test images", "caption-only backbone", "| GLIGEN |", "| InteractDiffusion |"):
        assert label in text
    assert "Command: `make reproduce-table-toy (test)`" in text and "CPU cores" in text
    data = json.loads(target.with_suffix(".json").read_text())
    assert [len(r["results"]) for r in data["rows"]] == [1, 1, 1, 1]
    # (3 layouts cover few of the 22 classes, so no mAP level is asserted here: test_shapes.py checks the
    # detector's ceiling on the whole test split)
    assert all(r["results"][0]["map"]["fgahoi"]["default"]["full"] is not None for r in data["rows"])
    assert [c["statement"].split(" ")[0] for c in data["checks"]] == ["real", "caption-only", "InteractDiffusion",
                                                                      "every"]
    assert set(data["timings_s"]) >= {"train gligen seed 0", "eval shapes_real"}
    # a second call reuses every export and row: nothing is trained or generated again
    stamp = (tmp_path / "toy" / "eval" / "shapes_gligen_seed0" / "results.json").stat().st_mtime_ns
    reproduce_toy(tmp_path / "toy", **kwargs)
    assert (tmp_path / "toy" / "eval" / "shapes_gligen_seed0" / "results.json").stat().st_mtime_ns == stamp


def test_v_prediction_backbones_train_on_v():
    """A backbone whose scheduler predicts v (the HOI-Shapes one, SD 2.x) trains on v, others on the noise."""
    from interactdiffusion.training.module import InteractDiffusionModule

    latents, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    timesteps = torch.tensor([10, 500])
    v_module = InteractDiffusionModule({"kind": "tiny", "scheduler_config": {"prediction_type": "v_prediction"}},
                                       {"grounding": {"kind": "interactdiffusion"}}, {})
    alphas = v_module.noise_scheduler.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
    a, s = alphas.sqrt(), (1 - alphas).sqrt()
    assert torch.allclose(v_module.target(latents, noise, timesteps), a * noise - s * latents)
    eps_module = InteractDiffusionModule({"kind": "tiny"}, {"grounding": {"kind": "interactdiffusion"}}, {})
    assert torch.equal(eps_module.target(latents, noise, timesteps), noise)


def test_timestep_power_favours_noisy_steps_and_is_validated():
    from interactdiffusion.training.module import InteractDiffusionModule, Recipe

    with pytest.raises(ValueError, match="timestep_power"):
        Recipe.from_mapping({"timestep_power": 0.0})

    def draws(power: float) -> torch.Tensor:
        module = InteractDiffusionModule({"kind": "tiny"}, {"grounding": {"kind": "interactdiffusion"}},
                                         {"timestep_power": power})
        gens = [torch.Generator().manual_seed(k) for k in range(2000)]
        return module.sample_timesteps(gens, 1000, "cpu").float()

    uniform, noisy = draws(1.0), draws(0.5)
    assert 0 <= noisy.min() and noisy.max() <= 999
    assert abs(uniform.mean().item() - 500) < 25
    assert abs(noisy.mean().item() - 667) < 25  # E[t] = 2T/3 for p = 0.5


def test_make_toy_backbone_trains_and_copies_the_export(tmp_path):
    """`make toy-backbone` (cli.toy backbone) on a 2-step budget: the export lands where backbone=shapes reads."""
    from interactdiffusion.cli.toy import main

    dest = tmp_path / "committed"
    assert main(["backbone", "--out", str(tmp_path / "toy"), "--dest", str(dest), "--threads", "1",
                 *QUICK, *_paths(tmp_path)]) == 0
    assert check_backbone_folder(dest) == dest
    assert json.loads((dest / "scheduler" / "scheduler_config.json").read_text())["prediction_type"] == "v_prediction"


def _ablation_argv(run: Path, tmp_path: Path, seeds: int) -> list[str]:
    """cli.toy ablations on a 1-step budget and 2 layouts, one thread a job."""
    common = [f"backbone.path={run / 'export' / 'backbone'}", f"paths.cache_dir={tmp_path / 'cache'}",
              "extras.print_config=false"]
    train = [*common, "trainer.max_steps=1", "data.batch_size=2", "data.shapes.num_train=40",
             "data.shapes.num_test=10", "callbacks=none", "trainer.enable_progress_bar=false",
             "trainer.enable_model_summary=false"]
    evaluation = [*common, "eval.limit=2", "eval.steps=1", "eval.batch_size=2"]
    argv = ["ablations", "--seeds", str(seeds), "--jobs", "2", "--threads", "1", "--out", str(tmp_path / "toy"),
            "--results", str(tmp_path / "ablations.md"), "--data-dir", str(tmp_path / "data")]
    return argv + [f"--train={o}" for o in train] + [f"--eval={o}" for o in evaluation]


def test_reproduce_ablations_toy_one_ablation_one_seed(trained_backbone, tmp_path):
    """The driver end to end on the smallest sweep: full, GLIGEN and one ablation, one seed (6 subprocesses)."""
    from interactdiffusion.cli.toy import main

    _, run = trained_backbone
    assert main([*_ablation_argv(run, tmp_path, 1), "--ablations", "no_action_tokens"]) == 0
    text = (tmp_path / "ablations.md").read_text()
    assert text.index("| InteractDiffusion (full) |") < text.index("| GLIGEN |") < text.index("| w/o action tokens |")
    assert "w/o role embedding" not in text and "One seed only" in text and "whole command" in text
    data = json.loads((tmp_path / "ablations.json").read_text())
    assert [r["kind"] for r in data["rows"]] == ["interactdiffusion", "gligen", "ablation/no_action_tokens"]
    assert data["rows"][2]["allows_conclusion"] is False
    exported = load_file(str(tmp_path / "toy" / "train" / "ablation_no_action_tokens_seed0" / "export" /
                             "adapter.safetensors"))
    assert "position_net.linear_action.0.weight" not in exported
    with pytest.raises(ValueError, match="unknown HOI-Shapes ablation 'no_boxes'"):
        main([*_ablation_argv(run, tmp_path, 1), "--ablations", "no_boxes"])


@pytest.mark.slow
def test_reproduce_ablations_toy_trains_every_row_over_the_seeds_and_writes_the_sentences(trained_backbone, tmp_path):
    """make reproduce-ablations-toy on a 1-step budget, 2 seeds: all 24 jobs through the real CLIs, then ablations.md
    (10 min on the shared 2-core machine: slow)."""
    from interactdiffusion.cli.toy import main

    _, run = trained_backbone
    results = tmp_path / "ablations.md"
    argv = _ablation_argv(run, tmp_path, 2)
    assert main(argv) == 0
    text = results.read_text()
    for label in ("InteractDiffusion (full)", "| GLIGEN |", "w/o instance embedding", "w/o role embedding",
                  "w/o action tokens", "union box instead of between box"):
        assert label in text
    assert "Command: `python -m interactdiffusion.cli.toy ablations --seeds 2" in text and "CPU cores" in text
    data = json.loads(results.with_suffix(".json").read_text())
    assert [r["kind"] for r in data["rows"]][:2] == ["interactdiffusion", "gligen"]
    assert all(len(r["default_full"]) == 2 and len(r["results"]) == 2 for r in data["rows"])
    for row in data["rows"][1:]:  # every ablation row's sentence is computed from its numbers
        mean, std = row["mean_std"]
        assert f"{mean:.2f} ± {std:.2f}" in row["sentence"]
        assert ("does not allow" in row["sentence"]) == (row["allows_conclusion"] is False)
    # each ablation trained the adapter its config names: no action MLP without action tokens
    runs = tmp_path / "toy" / "train"
    assert "position_net.linear_action.0.weight" in load_file(
        str(runs / "ablation_union_box_seed1" / "export" / "adapter.safetensors"))
    assert "position_net.linear_action.0.weight" not in load_file(
        str(runs / "ablation_no_action_tokens_seed0" / "export" / "adapter.safetensors"))
    assert {"train ablation/no_role_embedding seed 1", "eval shapes_ablation_union_box_seed0"} <= set(data["timings_s"])


def test_ablation_verdict_compares_the_difference_with_the_larger_std():
    from interactdiffusion.reproduce.toy_ablations import verdict

    clear = verdict("ablation/no_action_tokens", [10.0, 12.0], [60.0, 64.0], [8.0, 9.0])
    assert clear["allows"] and "allows the conclusion that dropping the action tokens lowers mAP" in clear["sentence"]
    noisy = verdict("ablation/union_box", [30.0, 70.0], [60.0, 64.0], [8.0, 9.0])
    assert noisy["allows"] is False and "does not allow" in noisy["sentence"]
    one = verdict("ablation/union_box", [30.0], [60.0], [8.0])
    assert one["allows"] is False and "One seed only" in one["sentence"]
    reference = verdict("interactdiffusion", [60.0, 8.0], [60.0, 8.0], [8.0, 9.0])
    assert "on 1 of 2 seeds" in reference["sentence"]


def test_table_checks_every_seed_for_twice_gligen():
    """The per-seed statement: each InteractDiffusion seed against the GLIGEN adapter of the same seed."""
    from interactdiffusion.reproduce.toy import check_expectations

    def summary(ours, gligen):
        row = lambda v: {"map": {"fgahoi": {"default": {"full": v}}}}  # noqa: E731
        return {"rows": [{"label": "real", "runs": [row(100.0)]}, {"label": "caption", "runs": [row(0.5)]},
                         {"label": "GLIGEN", "runs": [row(v) for v in gligen]},
                         {"label": "InteractDiffusion", "runs": [row(v) for v in ours]}]}

    holds = check_expectations(summary([40.0, 12.0, 30.0], [5.0, 6.0, 2.0]))[-1]
    assert holds[1] and "12.00 / 6.00 = 2.0x" in holds[2]
    fails = check_expectations(summary([60.0, 11.0, 30.0], [5.0, 6.0, 2.0]))[-1]
    assert not fails[1]  # the mean is far above GLIGEN, but seed 1 is not twice its GLIGEN
    assert not check_expectations(summary([0.0, 12.0, 30.0], [0.0, 6.0, 2.0]))[-1][1]  # 0 vs 0 is not grounding
