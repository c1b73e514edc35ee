"""The LightningModule on its own: trainable set, the loss and its randomness, checkpoints, EMA, schedule."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf

from interactdiffusion.conditioning import GroundingIds
from interactdiffusion.config_path import config_dir
from interactdiffusion.training.ema import AdapterEMA
from interactdiffusion.training.module import (
    CHECKPOINT_KEY,
    CheckpointMismatchError,
    InteractDiffusionModule,
    Recipe,
)

N = 30


def _cfg(group: str, name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(f"{config_dir()}/{group}/{name}.yaml"))


def _module(**recipe) -> InteractDiffusionModule:
    module = InteractDiffusionModule(_cfg("backbone", "tiny"), _cfg("model", "interactdiffusion"), recipe)
    module.set_phrase_table(torch.randn(6, module.text_encoder.config.hidden_size, generator=torch.Generator().manual_seed(0)))
    return module


@pytest.fixture(scope="module")
def module() -> InteractDiffusionModule:
    return _module(warmup_steps=10)


def _batch(size: int = 2, interactions=(2, 1), has_interaction=None) -> dict:
    g = torch.Generator().manual_seed(1)
    masks = torch.zeros(size, N)
    ids = torch.full((3, size, N), -1, dtype=torch.long)
    for b, k in enumerate(interactions):
        masks[b, :k] = 1
        ids[:, b, :k] = torch.randint(0, 6, (3, k), generator=g)
    boxes = torch.rand(size, N, 4, generator=g).sort(-1).values
    grounding = GroundingIds(boxes[..., [0, 1, 2, 3]], boxes[..., [0, 1, 3, 2]].sort(-1).values, masks, ids[0], ids[1], ids[2])
    if has_interaction is None:
        has_interaction = [k > 0 for k in interactions]
    return {
        "pixel_values": torch.rand(size, 3, 32, 32, generator=g) * 2 - 1,
        "captions": [f"a person is riding a horse {i}" for i in range(size)],
        "grounding": grounding,
        "has_interaction": torch.tensor(has_interaction),
        "scene_ids": [str(i) for i in range(size)],
    }


def test_trainable_set_is_fusers_and_position_net_and_optimizer_holds_only_them(module):
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trainable
    assert all(".fuser." in n or n.startswith("unet.position_net.") for n in trainable)
    adapter = {n for n, _ in module.unet.named_parameters() if ".fuser." in n or n.startswith("position_net.")}
    assert trainable == {f"unet.{n}" for n in adapter}
    assert not any(p.requires_grad for p in module.vae.parameters())
    assert not any(p.requires_grad for p in module.text_encoder.parameters())
    optimizer = module.configure_optimizers()["optimizer"]
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert held == {id(p) for n, p in module.named_parameters() if n in trainable}
    assert sum(p.numel() for n, p in module.named_parameters() if n in trainable) == module.num_trainable
    assert optimizer.defaults["lr"] == 5e-5 and optimizer.defaults["weight_decay"] == 0.0


def test_hyperparameters_hold_configs_not_the_backbone(module):
    assert set(module.hparams) == {"backbone", "model", "recipe", "trainable"}
    assert module.hparams.trainable == "adapter"
    assert module.hparams.backbone["kind"] == "tiny"
    assert not any(isinstance(v, torch.nn.Module) for v in module.hparams.values())


def test_loss_is_a_function_of_the_step_key_and_sample_ids(module):
    batch = _batch()
    a, _ = module.compute_loss(batch, ("batch", 0))
    b, _ = module.compute_loss(batch, ("batch", 0))
    c, _ = module.compute_loss(batch, ("batch", 1))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # a sample's draws do not depend on its batch-mates: the per-sample loss of sample 0 alone equals
    # its share computed in the pair (loss is a mean over elements, so compare via the halves)
    single = {k: (v[:1] if torch.is_tensor(v) else v[:1]) for k, v in batch.items() if k != "grounding"}
    g = batch["grounding"]
    single["grounding"] = GroundingIds(*(getattr(g, f)[:1] for f in g.__dataclass_fields__))
    other = {k: (v[1:] if torch.is_tensor(v) else v[1:]) for k, v in batch.items() if k != "grounding"}
    other["grounding"] = GroundingIds(*(getattr(g, f)[1:] for f in g.__dataclass_fields__))
    module.recipe.grounding_drop_per_sample = True  # batch-level drop is shared anyway; keep it per sample
    try:
        pair, _ = module.compute_loss(batch, ("batch", 3))
        first, _ = module.compute_loss(single, ("batch", 3))
        second, _ = module.compute_loss(other, ("batch", 3))
    finally:
        module.recipe.grounding_drop_per_sample = False
    torch.testing.assert_close(pair, (first + second) / 2, rtol=1e-5, atol=1e-6)


def test_gradients_reach_only_the_adapter(module):
    module.zero_grad(set_to_none=True)
    loss, _ = module.compute_loss(_batch(), ("batch", 0))
    loss.backward()
    with_grad = {n for n, p in module.named_parameters() if p.grad is not None}
    assert with_grad == {n for n, p in module.named_parameters() if p.requires_grad}
    module.zero_grad(set_to_none=True)


def test_caption_drop_never_for_images_without_interaction():
    module = _module(caption_drop_prob=1.0, grounding_drop_prob=0.0)
    seen = []
    original = module.text_conditions
    module.text_conditions = lambda captions, *rest: seen.append(list(captions)) or original(captions, *rest)
    module.compute_loss(_batch(interactions=(2, 0)), ("batch", 0))
    assert seen[0][0] == ""  # dropped (p = 1)
    assert seen[0][1] != ""  # kept: no interaction in that image


@pytest.mark.parametrize("per_sample", [False, True])
def test_grounding_drop_gives_the_null_input(per_sample):
    module = _module(caption_drop_prob=0.0, grounding_drop_prob=1.0, grounding_drop_per_sample=per_sample)
    captured = {}
    handle = module.unet.position_net.register_forward_hook(
        lambda mod, args, kwargs, out: captured.update(kwargs), with_kwargs=True
    )
    try:
        _, stats = module.compute_loss(_batch(), ("batch", 0))
    finally:
        handle.remove()
    assert float(stats["grounding_dropped"]) == 1.0
    for key in ("masks", "subject_boxes", "object_boxes", "subject_positive_embeddings"):
        assert torch.count_nonzero(captured[key]) == 0, key


def test_latent_cache_batch_trains_like_the_image_batch(module):
    batch = _batch()
    with torch.no_grad():
        dist = module.vae.encode(batch["pixel_values"]).latent_dist
    cached = {k: v for k, v in batch.items() if k != "pixel_values"}
    cached["latent_mean"], cached["latent_std"] = dist.mean, dist.std
    a, _ = module.compute_loss(batch, ("batch", 5))
    b, _ = module.compute_loss(cached, ("batch", 5))
    torch.testing.assert_close(a, b)


def test_checkpoint_holds_no_backbone_keys_and_round_trips(module):
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    module.on_save_checkpoint(checkpoint)
    keys = set(checkpoint["state_dict"])
    assert keys == set(module.adapter_keys)
    assert all(".fuser." in k or ".position_net." in k for k in keys)
    assert CHECKPOINT_KEY in checkpoint
    fresh = _module(warmup_steps=10)
    with torch.no_grad():
        for p in fresh.unet.position_net.parameters():
            p.add_(1.0)
    loaded = copy.deepcopy(checkpoint)
    fresh.on_load_checkpoint(loaded)
    fresh.load_state_dict(loaded["state_dict"], strict=False)
    for key in keys:
        assert torch.equal(fresh.state_dict()[key], module.state_dict()[key])


def test_checkpoint_of_another_backbone_shape_fails_clearly(module):
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    module.on_save_checkpoint(checkpoint)
    wider = _cfg("backbone", "tiny")
    wider["text_encoder"]["hidden_size"] = 48
    wider["unet"]["cross_attention_dim"] = 48
    other = InteractDiffusionModule(wider, _cfg("model", "interactdiffusion"), {})
    with pytest.raises(CheckpointMismatchError, match="shape mismatches"):
        other.on_load_checkpoint(copy.deepcopy(checkpoint))
    gligen = InteractDiffusionModule(_cfg("backbone", "tiny"), _cfg("model", "gligen"), {})
    with pytest.raises(CheckpointMismatchError, match="does not have"):
        gligen.on_load_checkpoint(copy.deepcopy(checkpoint))


def test_ema_tracks_only_the_adapter_and_round_trips():
    module = _module(ema_decay=0.5)
    ema = module.ema
    assert set(ema.shadow) == {n for n, p in module.named_parameters() if p.requires_grad}
    param_name, param = next(iter(ema.params.items()))
    before = ema.shadow[param_name].clone()
    with torch.no_grad():
        param.add_(1.0)
    ema.update()
    decay = min(0.5, 1 / 10)
    torch.testing.assert_close(ema.shadow[param_name], before * decay + param.detach() * (1 - decay))
    state = ema.state_dict()
    other = AdapterEMA(module.trainable_named_parameters(), 0.5)
    other.load_state_dict(state)
    assert other.num_updates == 1 and torch.equal(other.shadow[param_name], ema.shadow[param_name])
    with ema.swapped_in():
        assert torch.equal(param.detach(), ema.shadow[param_name])
    assert not torch.equal(param.detach(), ema.shadow[param_name])


def test_warmup_then_constant_matches_the_official_schedule():
    """The official trainer's ``get_constant_schedule_with_warmup``: LR 0 at the first step, full LR
    at optimiser step ``warmup_steps`` (the old schedule was one step ahead)."""
    module = _module(warmup_steps=4, lr=1.0)
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(6):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert _module(warmup_steps=0, lr=1.0).configure_optimizers()["optimizer"].param_groups[0]["lr"] == 1.0


def test_a_training_step_leaves_the_global_rng_alone(module):
    """Per-step generators: user code and other callbacks keep their global streams across a step."""
    batch = _batch()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    with module.step_randomness(("batch", 5)):
        loss, _ = module.compute_loss(batch, ("batch", 5))
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(7)  # another global state: the step's numbers do not depend on it
    with module.step_randomness(("batch", 5)):
        again, _ = module.compute_loss(batch, ("batch", 5))
    assert torch.equal(loss, again)
    state = torch.get_rng_state()
    module.compute_loss(batch, ("batch", 6))
    assert torch.equal(torch.get_rng_state(), state)


def test_recipe_rejects_unknown_keys_and_bad_probabilities():
    with pytest.raises(ValueError, match="unknown recipe keys"):
        Recipe.from_mapping({"learning_rate": 1e-4})
    with pytest.raises(ValueError, match="caption_drop_prob"):
        Recipe.from_mapping({"caption_drop_prob": 1.5})


def test_gradient_checkpointing_gives_the_same_gradients():
    plain = _module()
    checkpointed = _module(gradient_checkpointing=True)
    assert checkpointed.unet.is_gradient_checkpointing
    grads = []
    for m in (plain, checkpointed):
        m.train()
        loss, _ = m.compute_loss(_batch(), ("batch", 2))
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6)


def test_model_init_from_gligen_weights(tmp_path):
    """``model.init_from`` with GLIGEN text-box weights: fusers and linears copied, linear_action derived."""
    from safetensors.torch import save_file

    from interactdiffusion.models.unet import adapter_state_dict

    gligen = InteractDiffusionModule(_cfg("backbone", "tiny"), _cfg("model", "gligen"), {})
    with torch.no_grad():
        for _, p in gligen.trainable_named_parameters():
            p.normal_()
    state = {k: v.contiguous() for k, v in adapter_state_dict(gligen.unet).items()}
    save_file(state, str(tmp_path / "gligen_text_box.safetensors"))
    model = {**_cfg("model", "interactdiffusion"), "init_from": str(tmp_path / "gligen_text_box.safetensors")}
    module = InteractDiffusionModule(_cfg("backbone", "tiny"), model, {})
    ours = adapter_state_dict(module.unet)
    fuser = next(k for k in state if ".fuser.linear.weight" in k)
    assert torch.equal(ours[fuser], state[fuser])
    assert torch.equal(ours["position_net.linear_action.0.weight"], state["position_net.linears.0.weight"])
    assert torch.equal(ours["position_net.null_action_feature"], state["position_net.null_positive_feature"])
    assert module.init_report and "gligen_text_box" in module.init_report
