"""InteractDiffusion-XL training configs: the published recipe, the sharded strategies, the 8-bit optimiser.

Lightning refuses FSDP on the CPU ("requires a GPU accelerator") and DeepSpeed needs its package and CUDA,
so these check the composed configs and the objects they build; a sharded run needs a GPU machine.
"""

from __future__ import annotations

import hydra
import pytest
import torch
from test_configs import _compose, _resolve

from interactdiffusion.training.optimizers import build_optimizer


def test_paper_xl_is_the_published_recipe():
    cfg = _resolve(_compose(["experiment=paper/interactdiffusion_xl"]))
    assert cfg["backbone"]["kind"] == "sdxl" and cfg["model"]["grounding"]["max_interactions"] == 32
    assert cfg["model"]["init_from"].endswith("gligen-xl-512/unet")
    assert (cfg["data"]["resolution"], cfg["data"]["batch_size"], cfg["data"]["max_interactions"]) == (512, 8, 32)
    trainer, recipe = cfg["trainer"], cfg["recipe"]
    assert (trainer["devices"], trainer["accumulate_grad_batches"], trainer["max_steps"]) == (8, 1, 250_000)
    assert trainer["precision"] == "16-mixed" and trainer["gradient_clip_val"] == 1.0
    assert trainer["strategy"]["_target_"].endswith("FSDPStrategy")
    assert (recipe["lr"], recipe["weight_decay"], recipe["warmup_steps"]) == (5e-5, 0.0, 1000)
    assert (recipe["caption_drop_prob"], recipe["grounding_drop_prob"]) == (0.5, 0.0)
    stage2 = _resolve(_compose(["experiment=paper/interactdiffusion_xl_1024"]))
    assert (stage2["data"]["resolution"], stage2["data"]["batch_size"]) == (1024, 1)
    assert (stage2["trainer"]["accumulate_grad_batches"], stage2["trainer"]["max_steps"]) == (4, 275_000)
    assert stage2["recipe"] == recipe


def test_fsdp_strategy_wraps_trainable_and_frozen_weights_in_separate_units():
    from diffusers.models.attention import BasicTransformerBlock, GatedSelfAttentionDense
    from diffusers.models.resnet import ResnetBlock2D
    from lightning.pytorch.strategies import FSDPStrategy
    from torch.distributed.fsdp import ShardingStrategy
    from transformers.models.clip.modeling_clip import CLIPEncoderLayer

    from interactdiffusion.models.grounding import GLIGENGrounding, InteractionTokenizer

    trainer = _compose(["trainer=fsdp"]).trainer
    strategy = hydra.utils.instantiate(trainer.strategy)
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.sharding_strategy == ShardingStrategy.FULL_SHARD
    assert strategy.kwargs["use_orig_params"] is True
    policy = strategy.kwargs["auto_wrap_policy"]
    assert policy._module_classes == {GatedSelfAttentionDense, InteractionTokenizer, GLIGENGrounding,
                                      BasicTransformerBlock, ResnetBlock2D, CLIPEncoderLayer}
    assert (trainer.accelerator, trainer.precision) == ("gpu", "bf16-mixed")


def test_deepspeed_is_zero_stage_2():
    trainer = _resolve(_compose(["trainer=deepspeed"]))["trainer"]
    assert trainer["strategy"]["_target_"] == "lightning.pytorch.strategies.DeepSpeedStrategy"
    assert trainer["strategy"]["stage"] == 2 and trainer["strategy"]["offload_optimizer"] is False
    assert trainer["accelerator"] == "gpu"


def test_8bit_adamw_is_refused_clearly_where_unsupported():
    params = [torch.nn.Parameter(torch.zeros(3))]
    assert isinstance(build_optimizer(params, "adamw", 1e-4, (0.9, 0.999), 1e-8, 0.0), torch.optim.AdamW)
    with pytest.raises((ImportError, ValueError), match="adamw_8bit needs"):
        build_optimizer(params, "adamw_8bit", 1e-4, (0.9, 0.999), 1e-8, 0.0)
    with pytest.raises(ValueError, match="must be one of"):
        build_optimizer(params, "sgd", 1e-4, (0.9, 0.999), 1e-8, 0.0)


def test_fsdp_strategy_keeps_the_fusers_scalar_gates_out_of_sharding():
    from interactdiffusion.models.sdxl import build_tiny_xl_backbone
    from interactdiffusion.training.fsdp_scalars import exclude_scalars_from_fsdp

    strategy = hydra.utils.instantiate(_compose(["trainer=fsdp"]).trainer.strategy)
    unet = build_tiny_xl_backbone().unet
    assert exclude_scalars_from_fsdp(strategy, unet) == 16  # 8 fusers x (alpha_attn, alpha_dense)
    exclude_scalars_from_fsdp(strategy, unet)  # idempotent (configure_model may run again)
    ignored = strategy.kwargs["ignored_states"]
    assert len(ignored) == 16 and all(p.dim() == 0 for p in ignored)


def _fsdp_rank(rank: int, world: int, port: int, results) -> None:
    import copy
    import os

    import torch.distributed as dist
    from torch.distributed.fsdp import FullyShardedDataParallel

    from interactdiffusion.models.sdxl import build_tiny_xl_backbone
    from interactdiffusion.training.fsdp_scalars import scalar_parameters

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        strategy = hydra.utils.instantiate(_compose(["trainer=fsdp"]).trainer.strategy)
        backbone = build_tiny_xl_backbone(grounding={"max_interactions": 32})
        backbone.freeze()
        kwargs = {k: v for k, v in strategy.kwargs.items() if k != "state_dict_type"}
        try:  # on a copy: auto-wrapping replaces children before it fails
            FullyShardedDataParallel(copy.deepcopy(backbone.unet), device_id=torch.device("cpu"), **kwargs)
        except ValueError as error:
            results.put(("plain", rank, str(error)))
        else:
            results.put(("plain", rank, "accepted"))
        alphas = scalar_parameters(backbone.unet)
        unet = FullyShardedDataParallel(backbone.unet, device_id=torch.device("cpu"), ignored_states=alphas, **kwargs)
        optimizer = torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=1e-2)
        torch.manual_seed(rank)  # different data per rank
        cond = backbone.unet_text_conditions(["a person", "a horse"], "cpu", size=(32, 32))
        grounding = {"subject_boxes": torch.rand(2, 30, 4), "object_boxes": torch.rand(2, 30, 4),
                     "masks": torch.ones(2, 30),
                     **{f"{r}_positive_embeddings": torch.randn(2, 30, 80) for r in ("subject", "object", "action")}}
        out = unet(torch.randn(2, 4, 16, 16), torch.tensor([10, 500]), **cond,
                   cross_attention_kwargs={"gligen": grounding}).sample
        out.pow(2).mean().backward()
        strategy_stub = type("S", (), {})()
        from interactdiffusion.training import fsdp_scalars

        fsdp_scalars.is_fsdp = lambda _: True  # this process has no Lightning trainer
        fsdp_scalars.average_scalar_grads(strategy_stub, backbone.unet)
        optimizer.step()
        results.put(("alphas", rank, [float(p) for p in alphas]))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_fsdp_with_ignored_gates_trains_on_two_cpu_ranks():
    """Plain FSDP refuses the 0-dim gates; with them ignored and their grads averaged, both ranks agree."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    mp.start_processes(_fsdp_rank, args=(2, port, results), nprocs=2, start_method="spawn")
    got = [results.get(timeout=60) for _ in range(4)]
    assert all("scalar parameters" in r[2] for r in got if r[0] == "plain")
    alphas = {r[1]: r[2] for r in got if r[0] == "alphas"}
    assert alphas[0] == alphas[1] and any(a != 0 for a in alphas[0])
