import pytest
import torch

from interactdiffusion.models.backbone import (
    BackboneError,
    PhraseEncoder,
    build_backbone,
    load_diffusers_backbone,
    module_fingerprint,
)


def test_tiny_tokenizer_is_the_real_clip_bpe(tiny_backbone):
    ids = tiny_backbone.tokenizer("a person riding a bicycle").input_ids
    # CLIP ViT-L/14 ids: <|startoftext|> a person riding a bicycle <|endoftext|>
    assert ids == [49406, 320, 2533, 6765, 320, 11652, 49407]
    assert len(tiny_backbone.tokenizer) == 49408


def test_phrase_encoder_is_pooled_eos_state_and_memoised(tiny_backbone):
    enc = PhraseEncoder(tiny_backbone.text_encoder, tiny_backbone.tokenizer, batch_size=2)
    calls = []
    handle = tiny_backbone.text_encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        out = enc(["person", "riding", "bicycle", "person", "riding"])
        again = enc(["bicycle", "person"])
    finally:
        handle.remove()
    assert out.shape == (5, 32) and torch.equal(out[0], out[3]) and torch.equal(again[0], out[2])
    assert sum(calls) == 3  # three distinct phrases encoded once each, in batches of 2
    ids = tiny_backbone.tokenizer(["riding"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = tiny_backbone.text_encoder(ids).last_hidden_state
    eos = (ids[0] == tiny_backbone.tokenizer.eos_token_id).nonzero()[0, 0]
    assert torch.allclose(out[1], hidden[0, eos], atol=1e-6)


def test_missing_backbone_folder_names_the_layout(tmp_path):
    with pytest.raises(BackboneError) as err:
        build_backbone(kind="diffusers", path=str(tmp_path / "nope"))
    assert "not found" in str(err.value) and "unet/config.json" in str(err.value)


def test_incomplete_backbone_folder_names_each_missing_part(tmp_path, tiny_backbone):
    tiny_backbone.vae.save_pretrained(tmp_path / "vae")
    (tmp_path / "unet").mkdir()
    with pytest.raises(BackboneError) as err:
        load_diffusers_backbone(tmp_path)
    message = str(err.value)
    for part in ("unet/config.json", "text_encoder/config.json", "tokenizer/vocab.json", "scheduler/scheduler_config.json"):
        assert part in message
    assert "vae/" not in message.split("missing:")[1].split("\n")[0]


def test_diffusers_folder_loads_frozen_sd_and_fresh_adapter(tmp_path, tiny_backbone):
    from diffusers import UNet2DConditionModel

    bb = tiny_backbone
    cfg = {k: v for k, v in bb.unet.config.items() if not k.startswith("_") and k != "attention_type"}
    plain = UNet2DConditionModel(**cfg)
    plain.load_state_dict({k: v for k, v in bb.unet.state_dict().items() if "fuser" not in k and "position_net" not in k})
    plain.save_pretrained(tmp_path / "unet")
    bb.vae.save_pretrained(tmp_path / "vae")
    bb.text_encoder.save_pretrained(tmp_path / "text_encoder")
    bb.tokenizer.save_pretrained(tmp_path / "tokenizer")
    bb.scheduler.save_pretrained(tmp_path / "scheduler")
    loaded = build_backbone(kind="diffusers", path=str(tmp_path), resolution=32)
    assert loaded.unet.config.attention_type == "gated"
    assert type(loaded.unet.position_net).__name__ == "InteractionTokenizer"
    for k, v in plain.state_dict().items():
        assert torch.equal(loaded.unet.state_dict()[k], v)
    assert module_fingerprint(loaded.text_encoder) == module_fingerprint(bb.text_encoder)
    assert loaded.tokenizer("a person").input_ids == bb.tokenizer("a person").input_ids
    assert loaded.freeze() == sum(p.numel() for n, p in loaded.unet.named_parameters() if "fuser" in n or "position_net" in n)
    assert not any(p.requires_grad for p in loaded.vae.parameters())
