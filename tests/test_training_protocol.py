"""The training recipe's randomness and arithmetic as the paper has them: caption dropped with p = 0.5 per
sample, grounding replaced by the null input with p = 0.1 per batch (the same on every rank), and the
noising and targets equal to diffusers' ``DDPMScheduler.add_noise`` / ``get_velocity``."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from diffusers import DDPMScheduler
from test_train_module import _batch, _module


class StubUNet(torch.nn.Module):
    """Stands in for the UNet where only the draws before it matter (thousands of steps in seconds)."""

    def forward(self, sample, timesteps, encoder_hidden_states=None, cross_attention_kwargs=None):
        self.last = (sample, timesteps, cross_attention_kwargs)
        return SimpleNamespace(sample=torch.zeros_like(sample))


def within(count: int, trials: int, p: float, sigmas: float = 4.5) -> bool:
    return abs(count - trials * p) <= sigmas * math.sqrt(trials * p * (1 - p))


@pytest.fixture(scope="module")
def stubbed():
    module = _module()  # the paper's recipe: caption 0.5 per sample, grounding 0.1 per batch
    assert (module.recipe.caption_drop_prob, module.recipe.grounding_drop_prob) == (0.5, 0.1)
    assert module.recipe.grounding_drop_per_sample is False
    module.unet = StubUNet()
    module.encode_text = lambda captions: torch.zeros(len(captions), 77, module.text_encoder.config.hidden_size)
    batch = _batch(size=8, interactions=(2, 1, 1, 3, 1, 2, 1, 1))
    mean = torch.zeros(8, 4, 4, 4)
    module.latent_distribution = lambda b: (mean, torch.ones_like(mean))
    return module, batch


def test_caption_and_grounding_drop_rates(stubbed):
    module, batch = stubbed
    captions = grounding = mixed = 0
    steps = 1500
    for step in range(steps):
        _, stats = module.compute_loss(batch, (step, 0))
        dropped_captions = round(float(stats["caption_dropped"]) * 8)
        captions += dropped_captions
        mixed += 0 < dropped_captions < 8  # per sample: a batch rarely drops all or none (2 in 256)
        dropped = float(stats["grounding_dropped"])
        assert dropped in (0.0, 1.0)  # the whole batch or none of it
        grounding += int(dropped)
    assert within(captions, steps * 8, 0.5), captions / (steps * 8)
    assert mixed > 0.95 * steps
    assert within(grounding, steps, 0.1), grounding / steps
    # the rates are real probabilities, not 0/1 artefacts of a fixed seed
    assert 0.45 < captions / (steps * 8) < 0.55 and 0.07 < grounding / steps < 0.13


def test_grounding_drop_is_the_same_on_every_rank(stubbed):
    """Two ranks see other scenes at the same step: the per-batch decision depends only on the step."""
    module, batch = stubbed
    other = dict(batch, scene_ids=[f"rank1-{i}" for i in range(8)])
    decisions = []
    for step in range(200):
        a = float(module.compute_loss(batch, (step, 0))[1]["grounding_dropped"])
        b = float(module.compute_loss(other, (step, 0))[1]["grounding_dropped"])
        assert a == b
        decisions.append(a)
    assert 0 < sum(decisions) < len(decisions)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_noising_and_target_equal_diffusers(prediction_type):
    module = _module()
    reference = DDPMScheduler.from_config(module.noise_scheduler.config, prediction_type=prediction_type)
    module.noise_scheduler = reference
    captured = {}
    original_target = module.target

    def target(latents, noise, *rest):
        out = original_target(latents, noise, *rest)
        captured.update(latents=latents, noise=noise, target=out)
        return out

    module.target = target
    unet = module.unet
    handle = unet.register_forward_pre_hook(
        lambda m, args, kwargs: captured.update(noisy=args[0], timesteps=args[1]), with_kwargs=True)
    try:
        module.compute_loss(_batch(size=4, interactions=(1, 2, 1, 1)), (3, 0))
    finally:
        handle.remove()
    latents, noise, t = captured["latents"], captured["noise"], captured["timesteps"]
    assert t.unique().numel() > 1
    torch.testing.assert_close(captured["noisy"], reference.add_noise(latents, noise, t), rtol=1e-6, atol=1e-6)
    expected = noise if prediction_type == "epsilon" else reference.get_velocity(latents, noise, t)
    torch.testing.assert_close(captured["target"], expected, rtol=1e-6, atol=1e-6)


def test_gate_lr_scale_puts_the_gates_in_their_own_group():
    """``recipe.gate_lr_scale``: the fusers' gates step at lr × scale, everything else at lr; 1 = one group."""
    from test_train_module import _module

    plain = _module(lr=1e-3, warmup_steps=0).configure_optimizers()["optimizer"]
    assert len(plain.param_groups) == 1  # checkpoints written before the option resume unchanged
    module = _module(lr=1e-3, warmup_steps=0, gate_lr_scale=10)
    optimizer = module.configure_optimizers()["optimizer"]
    others, gates = optimizer.param_groups
    names = {id(p): n for n, p in module.trainable_named_parameters()}
    gate_names = [names[id(p)] for p in gates["params"]]
    assert gate_names and all(n.endswith(("alpha_attn", "alpha_dense")) for n in gate_names)
    assert len(gate_names) == 2 * sum(n.endswith("alpha_attn") for n in names.values())
    assert not any(names[id(p)].endswith(("alpha_attn", "alpha_dense")) for p in others["params"])
    assert (others["lr"], gates["lr"]) == (1e-3, pytest.approx(1e-2))
    # one AdamW step from zero moments moves every parameter by about its group's lr
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.grad = torch.ones_like(p)
    before = [p.detach().clone() for p in gates["params"]]
    optimizer.step()
    moved = torch.stack([(p.detach() - b).abs().max() for p, b in zip(gates["params"], before)])
    assert torch.allclose(moved, torch.full_like(moved, 1e-2), rtol=1e-3)
    with pytest.raises(ValueError, match="gate_lr_scale"):
        _module(gate_lr_scale=0)
