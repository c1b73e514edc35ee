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


def test_fsdp_strategy_wraps_one_unit_per_transformer_block():
    from diffusers.models.attention import BasicTransformerBlock
    from lightning.pytorch.strategies import FSDPStrategy
    from torch.distributed.fsdp import ShardingStrategy

    trainer = _compose(["trainer=fsdp"]).trainer
    strategy = hydra.utils.instantiate(trainer.strategy)
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.sharding_strategy == ShardingStrategy.FULL_SHARD
    assert strategy.kwargs["use_orig_params"] is True
    policy = strategy.kwargs["auto_wrap_policy"]
    assert policy._module_classes == {BasicTransformerBlock}
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
