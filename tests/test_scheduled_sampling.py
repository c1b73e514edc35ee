"""Scheduled sampling as the official sampler has it: the ``[full, decay, off]`` triple of
``alpha_generator`` over the sampler's steps, β as ``[β, 0, 1-β]``, β = 1 unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.models.attention import GatedSelfAttentionDense
from test_pipeline import SCENES, UNetSpy, grounded_backbone, one_thread, run  # noqa: F401 (fixture)

from interactdiffusion.scheduled_sampling import fuser_scale, fuser_scales, sampler_step, schedule_triple


@pytest.fixture(scope="module")
def pipe():
    from interactdiffusion.pipeline import InteractDiffusionPipeline

    pipeline = InteractDiffusionPipeline.from_backbone(grounded_backbone())
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def official_alphas(length, kind):
    """The release's ``alpha_generator`` written out (inference.py), for comparison."""
    n0, n1 = int(kind[0] * length), int(kind[1] * length)
    decay = list(np.arange(start=0, stop=1, step=1 / n1)[::-1]) if n1 else []
    return [1] * n0 + decay + [0] * (length - n0 - n1)


@pytest.mark.parametrize("kind,length", [((0.8, 0.1, 0.1), 100), ((0.3, 0.3, 0.4), 50), ((1.0, 0.0, 0.0), 50),
                                         ((0.9, 0.0, 0.1), 50), ((0.0, 0.7, 0.3), 7), ((0.0, 0.0, 1.0), 5)])
def test_scales_equal_the_official_alpha_generator(kind, length):
    assert fuser_scales(kind, length) == [float(a) for a in official_alphas(length, kind)]


def test_beta_is_the_shorthand_and_bad_triples_are_refused():
    assert schedule_triple(0.3) == (0.3, 0.0, 0.7)
    assert schedule_triple(0.3, [0.5, 0.25, 0.25]) == (0.5, 0.25, 0.25)
    for bad in ([0.5, 0.5], [0.5, 0.6, -0.1], [0.5, 0.1, 0.1]):
        with pytest.raises(ValueError, match="three non-negative fractions"):
            schedule_triple(1.0, bad)
    # diffusers' PLMS has one extra (warm-up) iteration: iterations 0 and 1 are the official step 0
    assert [sampler_step(i, 51, 50) for i in (0, 1, 2, 50)] == [0, 0, 1, 49]
    assert [sampler_step(i, 50, 50) for i in (0, 1, 49)] == [0, 1, 49]


def test_a_scaled_fuser_is_the_official_formula():
    torch.manual_seed(0)
    fuser = GatedSelfAttentionDense(16, 8, 2, 8)
    with torch.no_grad():
        fuser.alpha_attn.fill_(0.7)
        fuser.alpha_dense.fill_(-0.4)
    x, objs = torch.randn(2, 5, 16), torch.randn(2, 3, 8)
    s = 0.375
    with torch.no_grad():
        h = x + s * torch.tanh(fuser.alpha_attn) * fuser.attn(fuser.norm1(torch.cat([x, fuser.linear(objs)], 1)))[:, :5]
        expected = h + s * torch.tanh(fuser.alpha_dense) * fuser.ff(fuser.norm2(h))
        holder = torch.nn.ModuleList([fuser])
        with fuser_scale(holder, s):
            scaled = fuser(x, objs)
        with fuser_scale(holder, 0.0):
            off = fuser(x, objs)
        with fuser_scale(holder, 1.0):
            full = fuser(x, objs)
    torch.testing.assert_close(scaled, expected, rtol=0, atol=1e-6)
    assert torch.equal(off, x)
    assert not fuser.attn._forward_hooks and not fuser.ff._forward_hooks
    assert not torch.allclose(full, scaled)


class ScaleSpy(UNetSpy):
    """Also records the scale the fusers run at in each UNet call."""

    def __enter__(self):
        super().__enter__()
        fuser = next(m for m in self.pipe.unet.modules() if isinstance(m, GatedSelfAttentionDense))
        probe = torch.full((1,), 1.0)
        self.scales = []

        def record(module, args, kwargs):
            if not fuser.enabled:
                self.scales.append(0.0)
            else:
                hooks = list(fuser.attn._forward_hooks.values())
                self.scales.append(float(hooks[0](None, None, probe)) if hooks else 1.0)

        self.handles.append(self.pipe.unet.register_forward_pre_hook(record, with_kwargs=True))
        return self


def test_pipeline_follows_the_triple_over_the_sampler_steps(pipe):
    with ScaleSpy(pipe) as spy:
        run(pipe, SCENES[:1], num_inference_steps=10, interactdiffusion_scheduled_sampling=[0.4, 0.4, 0.2])
    # 11 PLMS iterations: the warm-up one and step 0 at 1, steps 1-3 at 1, decay 0.75 .. 0, then off
    assert spy.scales == [1.0, 1.0, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0, 0.0]
    assert [c[1] for c in spy.calls] == [s > 0 for s in spy.scales]  # no grounding tokens once off
    with ScaleSpy(pipe) as spy:
        run(pipe, SCENES[:1], num_inference_steps=10, interactdiffusion_scheduled_sampling_beta=0.9)
    assert spy.scales == [1.0] * 10 + [0.0]  # int(0.9 * 10) = 9 official steps on (+ the warm-up iteration)


def test_beta_one_is_the_full_triple_and_decay_changes_the_image(pipe):
    full = run(pipe, SCENES[:1], interactdiffusion_scheduled_sampling_beta=1.0)[0]
    same = run(pipe, SCENES[:1], interactdiffusion_scheduled_sampling=[1.0, 0.0, 0.0])[0]
    decayed = run(pipe, SCENES[:1], interactdiffusion_scheduled_sampling=[0.0, 1.0, 0.0])[0]
    assert np.array_equal(np.asarray(full), np.asarray(same))
    assert not np.array_equal(np.asarray(full), np.asarray(decayed))
