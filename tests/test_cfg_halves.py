"""Classifier-free guidance: the first half of the batched UNet call is the unconditional branch (the
negative prompt with the NULL grounding), the second the conditional one; the pipeline's
``uncond, cond = noise_pred.chunk(2)`` relies on that order (REFERENCE §3)."""

from __future__ import annotations

import torch
from test_pipeline import SCENES, grounded_backbone, one_thread, randomise_adapter, run  # noqa: F401 (fixture)

from interactdiffusion.pipeline import PAPER_NEGATIVE_PROMPT, InteractDiffusionPipeline


def test_null_grounding_and_negative_prompt_are_the_first_half():
    backbone = grounded_backbone()
    randomise_adapter(backbone)
    pipe = InteractDiffusionPipeline.from_backbone(backbone)
    pipe.set_progress_bar_config(disable=True)
    calls = []

    def spy(module, args, kwargs):
        objs = kwargs["cross_attention_kwargs"]["gligen"]["objs"]
        calls.append((objs.detach().clone(), kwargs["encoder_hidden_states"].detach().clone()))

    scenes = SCENES[:2]
    handle = pipe.unet.register_forward_pre_hook(spy, with_kwargs=True)
    try:
        run(pipe, scenes, guidance_scale=7.5, negative_prompt=PAPER_NEGATIVE_PROMPT)
    finally:
        handle.remove()
    with torch.no_grad():
        null = pipe.null_grounding_tokens(len(scenes), "cpu")
        cond = pipe.grounding_tokens(scenes, "cpu")
        negative = pipe.encode_prompt([PAPER_NEGATIVE_PROMPT] * len(scenes), "cpu")
        positive = pipe.encode_prompt([s.caption for s in scenes], "cpu")
    assert not torch.allclose(null, cond)
    objs, text = calls[0]
    assert torch.equal(objs[: len(scenes)], null) and torch.equal(objs[len(scenes):], cond)
    assert torch.equal(text[: len(scenes)], negative) and torch.equal(text[len(scenes):], positive)

