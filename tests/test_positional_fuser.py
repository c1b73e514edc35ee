"""``visual_positions``: fusers that know where each visual token is (for small backbones), off by default."""

from __future__ import annotations

import torch

from interactdiffusion.models.positional_fuser import PositionalGatedSelfAttention, cell_boxes
from interactdiffusion.models.unet import adapter_state_dict, build_grounded_unet, install_grounding

UNET = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, cross_attention_dim=32,
            attention_head_dim=8, norm_num_groups=32, block_out_channels=[32, 64],
            down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"], up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"])


def _grounding(batch: int = 2, n: int = 2) -> dict:
    g = torch.Generator().manual_seed(0)
    boxes = torch.rand(batch, n, 4, generator=g).sort(-1).values[..., [0, 1, 2, 3]]
    return dict(subject_boxes=boxes, object_boxes=boxes.flip(-1).sort(-1).values, masks=torch.ones(batch, n),
                subject_positive_embeddings=torch.randn(batch, n, 32, generator=g),
                object_positive_embeddings=torch.randn(batch, n, 32, generator=g),
                action_positive_embeddings=torch.randn(batch, n, 32, generator=g))


def test_cell_boxes_tile_the_image_row_major():
    boxes = cell_boxes(2, 4)
    assert boxes.shape == (8, 4)
    assert torch.allclose(boxes[0], torch.tensor([0.0, 0.0, 0.25, 0.5]))
    assert torch.allclose(boxes[5], torch.tensor([0.25, 0.5, 0.5, 1.0]))  # row 1, column 1


def test_off_by_default_and_on_adds_only_the_position_projection():
    torch.manual_seed(0)
    plain = build_grounded_unet(UNET, {"kind": "interactdiffusion", "hidden_dim": 64})
    torch.manual_seed(0)
    positional = build_grounded_unet(UNET, {"kind": "interactdiffusion", "hidden_dim": 64, "visual_positions": True})
    assert not any(isinstance(m, PositionalGatedSelfAttention) for m in plain.modules())
    assert "visual_positions" not in plain.position_net.config
    assert positional.position_net.config["visual_positions"] is True
    extra = set(adapter_state_dict(positional)) - set(adapter_state_dict(plain))
    assert extra and all(k.endswith((".fuser.position.weight", ".fuser.position.bias")) for k in extra)
    assert set(adapter_state_dict(plain)) <= set(adapter_state_dict(positional))


def test_fresh_positional_adapter_leaves_the_unet_unchanged_and_positions_matter_once_open():
    torch.manual_seed(0)
    unet = build_grounded_unet(UNET, {"kind": "interactdiffusion", "hidden_dim": 64, "visual_positions": True}).eval()
    x, t, text = torch.randn(2, 4, 8, 8), torch.tensor([10, 700]), torch.randn(2, 77, 32)
    with torch.no_grad():
        grounded = unet(x, t, encoder_hidden_states=text, cross_attention_kwargs={"gligen": _grounding()}).sample
        bare = unet(x, t, encoder_hidden_states=text).sample
        assert torch.equal(grounded, bare)
        for module in unet.modules():
            if isinstance(module, PositionalGatedSelfAttention):
                module.alpha_attn.fill_(1.0)
        opened = unet(x, t, encoder_hidden_states=text, cross_attention_kwargs={"gligen": _grounding()}).sample
        for module in unet.modules():
            if isinstance(module, PositionalGatedSelfAttention):
                module.position.weight.zero_()
                module.position.bias.zero_()
        blind = unet(x, t, encoder_hidden_states=text, cross_attention_kwargs={"gligen": _grounding()}).sample
    assert not torch.allclose(opened, bare) and not torch.allclose(opened, blind)
    # a non-square input lays the tokens on its own aspect ratio
    with torch.no_grad():
        unet(torch.randn(1, 4, 8, 16), t[:1], encoder_hidden_states=text[:1],
             cross_attention_kwargs={"gligen": _grounding(1)})


def test_reinstalling_switches_fusers_both_ways_and_keeps_shared_weights():
    unet = build_grounded_unet(UNET, {"kind": "gligen", "hidden_dim": 64})
    before = {k: v.clone() for k, v in adapter_state_dict(unet).items() if ".fuser." in k}
    install_grounding(unet, {"kind": "gligen", "hidden_dim": 64, "visual_positions": True})
    assert any(isinstance(m, PositionalGatedSelfAttention) for m in unet.modules())
    after = adapter_state_dict(unet)
    assert all(torch.equal(after[k], v) for k, v in before.items())
    install_grounding(unet, {"kind": "gligen", "hidden_dim": 64})
    assert not any(isinstance(m, PositionalGatedSelfAttention) for m in unet.modules())


def test_pipeline_round_trip_keeps_positional_fusers(tmp_path):
    from interactdiffusion.models.backbone import build_tiny_backbone
    from interactdiffusion.pipeline import InteractDiffusionPipeline

    backbone = build_tiny_backbone(grounding={"kind": "interactdiffusion", "hidden_dim": 64, "visual_positions": True})
    pipe = InteractDiffusionPipeline.from_backbone(backbone)
    pipe.save_pretrained(tmp_path / "pipe")
    again = InteractDiffusionPipeline.from_pretrained(tmp_path / "pipe")
    assert any(isinstance(m, PositionalGatedSelfAttention) for m in again.unet.modules())
    a, b = adapter_state_dict(pipe.unet), adapter_state_dict(again.unet)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
