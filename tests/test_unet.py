import torch
from diffusers import UNet2DConditionModel

from interactdiffusion.models.unet import (
    adapter_named_parameters,
    adapter_state_dict,
    build_grounded_unet,
    freeze_all_but_adapter,
    fusers,
    load_adapter_state_dict,
    set_fusers_enabled,
)

FUSER_KEYS = [
    "linear.weight", "linear.bias", "attn.to_q.weight", "attn.to_k.weight", "attn.to_v.weight",
    "attn.to_out.0.weight", "attn.to_out.0.bias", "ff.net.0.proj.weight", "ff.net.0.proj.bias",
    "ff.net.2.weight", "ff.net.2.bias", "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias",
    "alpha_attn", "alpha_dense",
]
BLOCKS = (
    [f"down_blocks.{b}.attentions.{a}" for b in range(3) for a in range(2)]
    + ["mid_block.attentions.0"]
    + [f"up_blocks.{b}.attentions.{a}" for b in range(1, 4) for a in range(3)]
)
POSITION_NET_KEYS = [
    f"position_net.{m}.{i}.{w}" for m in ("linears", "linear_action") for i in (0, 2, 4) for w in ("weight", "bias")
] + [
    "position_net.null_positive_feature", "position_net.null_action_feature", "position_net.null_position_feature",
    "position_net.interaction_embedding.emb.weight", "position_net.position_embedding.emb.weight",
]
OFFICIAL_KEYS = {f"{b}.transformer_blocks.0.fuser.{k}" for b in BLOCKS for k in FUSER_KEYS} | set(POSITION_NET_KEYS)


def test_sd1_trainable_count_and_key_set_equal_the_official_release(sd1_unet):
    assert freeze_all_but_adapter(sd1_unet) == 210_211_488
    trainable = {n for n, p in sd1_unet.named_parameters() if p.requires_grad}
    assert trainable == OFFICIAL_KEYS
    assert set(adapter_state_dict(sd1_unet)) == OFFICIAL_KEYS
    assert len(list(fusers(sd1_unet))) == 16
    for name, p in sd1_unet.named_parameters():
        assert p.requires_grad == (name in OFFICIAL_KEYS)


def _grounding(b, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    lo = torch.rand(b, 30, 2, generator=g) * 0.5
    masks = torch.zeros(b, 30)
    masks[:, :2] = 1
    return {
        "subject_boxes": torch.cat([lo, lo + 0.4], -1),
        "object_boxes": torch.cat([lo.flip(-1), lo.flip(-1) + 0.3], -1),
        "masks": masks,
        "subject_positive_embeddings": torch.randn(b, 30, d, generator=g),
        "object_positive_embeddings": torch.randn(b, 30, d, generator=g),
        "action_positive_embeddings": torch.randn(b, 30, d, generator=g),
    }


def test_fresh_adapter_is_identity_and_fusers_off_is_the_plain_unet(tiny_backbone):
    unet = tiny_backbone.unet
    cfg = {k: v for k, v in unet.config.items() if not k.startswith("_") and k != "attention_type"}
    plain = UNet2DConditionModel(**cfg)
    sd_weights = {k: v for k, v in unet.state_dict().items() if not ("fuser" in k or k.startswith("position_net"))}
    plain.load_state_dict(sd_weights)
    x, enc = torch.randn(2, 4, 16, 16), torch.randn(2, 77, 32)
    kwargs = {"gligen": _grounding(2, 32)}
    with torch.no_grad():
        reference = plain(x, 500, enc).sample
        fresh = unet(x, 500, enc, cross_attention_kwargs=dict(kwargs)).sample
    assert torch.equal(fresh, reference)  # alphas are 0: tanh(0) * anything == 0

    trained = build_grounded_unet(cfg)
    trained.load_state_dict(unet.state_dict())
    with torch.no_grad():
        for name, p in trained.named_parameters():
            if "alpha" in name:
                p.fill_(0.7)
        active = trained(x, 500, enc, cross_attention_kwargs={"gligen": _grounding(2, 32)}).sample
        set_fusers_enabled(trained, False)
        off = trained(x, 500, enc, cross_attention_kwargs={"gligen": _grounding(2, 32)}).sample
    assert not torch.allclose(active, reference)
    assert torch.equal(off, reference)


def test_adapter_state_round_trip_and_shape_mismatch_is_explained(tiny_backbone):
    cfg = {k: v for k, v in tiny_backbone.unet.config.items() if not k.startswith("_")}
    a = build_grounded_unet(cfg)
    state = {k: torch.randn_like(v) for k, v in adapter_state_dict(a).items()}
    assert load_adapter_state_dict(a, state) == []
    assert all(torch.equal(adapter_state_dict(a)[k], v) for k, v in state.items())
    wider = build_grounded_unet({**cfg, "block_out_channels": [64, 64]})
    try:
        load_adapter_state_dict(wider, state)
    except ValueError as err:
        assert "do not fit this backbone" in str(err)
    else:
        raise AssertionError("a shape mismatch must be refused")
    assert sum(p.numel() for _, p in adapter_named_parameters(a)) > 0
