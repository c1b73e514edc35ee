"""Half precision on the CPU, with tolerances tighter than the effects they must not hide: fp16 inference
against fp32 (closer than the interaction module's own effect on the image), and bf16-mixed training
(Lightning's autocast, frozen parts in bf16, adapter and its gradients fp32) against fp32."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from test_pipeline import SCENES, grounded_backbone, one_thread, randomise_adapter, run  # noqa: F401 (fixture)
from test_train_module import _batch, _module

from interactdiffusion.pipeline import InteractDiffusionPipeline


def _pipeline(precision: str) -> InteractDiffusionPipeline:
    backbone = grounded_backbone()
    randomise_adapter(backbone)
    pipe = InteractDiffusionPipeline.from_backbone(backbone, precision=precision)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_fp16_inference_matches_fp32():
    fp32, fp16 = _pipeline("fp32"), _pipeline("fp16")
    assert {fp16.unet.dtype, fp16.vae.dtype, fp16.text_encoder.dtype} == {torch.float16}
    full, half = run(fp32, SCENES), run(fp16, SCENES)
    without_module = run(fp32, SCENES, interactdiffusion_scheduled_sampling_beta=0.0)
    diff, effect = np.abs(full - half), np.abs(full - without_module)
    # measured: fp16 mean 3e-4 / max 2.5e-3; the module's effect mean 4.7e-3 / max 3.2e-2 (pixels in [0, 1])
    assert np.isfinite(half).all()
    assert diff.mean() < 1e-3 and diff.max() < 1e-2
    assert diff.mean() < effect.mean() / 4 and diff.max() < effect.max() / 3


@pytest.mark.filterwarnings("ignore:There are modules in AutoencoderKL")
def test_bf16_mixed_training_step_matches_fp32():
    from lightning.pytorch.plugins.precision import MixedPrecision

    module = _module()
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in module.trainable_named_parameters():
            param.fill_(0.5) if "alpha" in name else param.normal_(0, 0.05)
    batch = _batch(size=2)

    def step(context, frozen_dtype, key=(5, 0)):
        module.zero_grad(set_to_none=True)
        module.vae.to(frozen_dtype)
        module.text_encoder.to(frozen_dtype)
        with context:
            loss, _ = module.compute_loss(batch, key)
        loss.backward()
        grads = [p.grad for _, p in module.trainable_named_parameters()]
        return float(loss), torch.cat([g.flatten() for g in grads]), {g.dtype for g in grads}

    loss32, grad32, _ = step(contextlib.nullcontext(), torch.float32)
    plugin = MixedPrecision("bf16-mixed", "cpu")
    loss16, grad16, dtypes = step(plugin.forward_context(), torch.bfloat16)
    _, other_step, _ = step(contextlib.nullcontext(), torch.float32, key=(6, 0))
    module.vae.to(torch.float32)
    module.text_encoder.to(torch.float32)
    assert dtypes == {torch.float32}  # the adapter stays fp32 for the optimiser
    assert {p.dtype for _, p in module.trainable_named_parameters()} == {torch.float32}
    # measured: loss rel. diff 5e-5, gradient cosine 0.9996 (another step's gradient: cosine 0.35)
    assert abs(loss16 - loss32) / loss32 < 1e-3
    cosine = float(torch.nn.functional.cosine_similarity(grad32, grad16, dim=0))
    assert cosine > 0.995 > float(torch.nn.functional.cosine_similarity(grad32, other_step, dim=0))
    assert (grad32 - grad16).norm() / grad32.norm() < 0.1
