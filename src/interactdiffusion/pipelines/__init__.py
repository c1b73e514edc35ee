"""The pieces of ``interactdiffusion.pipeline`` that are not the pipeline class, one concern each.

``schedulers`` (sampler presets, precisions), ``official_arguments`` (the official diffusers call and
load arguments as scenes), ``loading`` (weights of every format into a backbone, pipeline folders),
``denoising`` (the steps of a call: scenes and seeds, initial noise, the loop, decoding),
``grounding_tokens`` (the interaction tokenizer on a call's scenes and on the null input).
``interactdiffusion.pipeline`` re-exports all of them.
"""
