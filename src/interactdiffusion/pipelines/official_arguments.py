"""The official release's calling conventions: its ``interactdiffusion_*`` arguments as scenes, its noise."""

from __future__ import annotations

import warnings

import torch

from ..scene import MAX_INTERACTIONS, Interaction, Scene

# Arguments that scripts written for the official release pass to ``DiffusionPipeline.from_pretrained``
# and that mean nothing for a local folder without a safety checker: accepted and ignored.
IGNORED_LOAD_ARGUMENTS = frozenset({
    "trust_remote_code", "custom_pipeline", "local_files_only", "use_safetensors", "low_cpu_mem_usage",
    "safety_checker", "feature_extractor", "requires_safety_checker",
})


def scenes_from_official_arguments(
    prompts: list[str],
    subject_phrases,
    object_phrases,
    action_phrases,
    subject_boxes,
    object_boxes,
    max_interactions: int = MAX_INTERACTIONS,
) -> list[Scene]:
    """The official diffusers arguments → one ``Scene`` per prompt (ids "0", "1", ...).

    Phrases and boxes are either one list shared by every prompt (the official pipeline) or one list
    per prompt. More than ``max_interactions`` triplets are truncated with a warning, as officially.
    """
    named = {
        "interactdiffusion_subject_phrases": subject_phrases,
        "interactdiffusion_object_phrases": object_phrases,
        "interactdiffusion_action_phrases": action_phrases,
        "interactdiffusion_subject_boxes": subject_boxes,
        "interactdiffusion_object_boxes": object_boxes,
    }
    given = [k for k, v in named.items() if v is not None]
    if given and len(given) != len(named):
        missing = [k for k in named if k not in given]
        raise ValueError(f"{', '.join(missing)} must be given together with {', '.join(given)}")
    batch = len(prompts)

    def per_prompt(name: str, value, boxes: bool) -> list:
        if value is None:
            return [[] for _ in range(batch)]
        value = value.tolist() if hasattr(value, "tolist") else list(value)
        first = value[0] if value else None
        if boxes:
            nested = isinstance(first, (list, tuple)) and (not first or isinstance(first[0], (list, tuple)))
        else:
            nested = isinstance(first, (list, tuple))
        if not nested:
            return [list(value) for _ in range(batch)]
        if len(value) != batch:
            raise ValueError(f"{name} has {len(value)} lists for {batch} prompts")
        return [list(v) for v in value]

    columns = {
        "subject": per_prompt("interactdiffusion_subject_phrases", subject_phrases, False),
        "object": per_prompt("interactdiffusion_object_phrases", object_phrases, False),
        "action": per_prompt("interactdiffusion_action_phrases", action_phrases, False),
        "subject_box": per_prompt("interactdiffusion_subject_boxes", subject_boxes, True),
        "object_box": per_prompt("interactdiffusion_object_boxes", object_boxes, True),
    }
    scenes = []
    for k, prompt in enumerate(prompts):
        lengths = {name: len(col[k]) for name, col in columns.items()}
        if len(set(lengths.values())) > 1:
            detail = ", ".join(f"{name}: {n}" for name, n in lengths.items())
            raise ValueError(f"prompt {k}: the interactdiffusion_* lists differ in length ({detail})")
        n = lengths["subject"]
        if n > max_interactions:
            warnings.warn(
                f"prompt {k}: {n} interactions; only the first {max_interactions} are used", stacklevel=3
            )
            n = max_interactions
        interactions = [
            Interaction(
                columns["subject"][k][j],
                columns["action"][k][j],
                columns["object"][k][j],
                tuple(columns["subject_box"][k][j]),
                tuple(columns["object_box"][k][j]),
            )
            for j in range(n)
        ]
        scenes.append(Scene(id=str(k), prompt=prompt, interactions=tuple(interactions)))
    return scenes


def _official_noise(shape, generator) -> torch.Tensor:
    """diffusers' ``randn_tensor`` semantics on the CPU: one generator for the batch, or one per image."""
    if isinstance(generator, list):
        return torch.cat([torch.randn((1, *shape[1:]), generator=g) for g in generator])
    if generator is not None and generator.device.type != "cpu":
        return torch.randn(shape, generator=generator, device=generator.device).cpu()
    return torch.randn(shape, generator=generator)
