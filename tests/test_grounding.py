import torch
from diffusers.models.embeddings import get_fourier_embeds_from_boundingbox

from interactdiffusion.models.grounding import (
    GLIGENGrounding,
    InteractionTokenizer,
    between_box,
    union_box,
)


def _b(*v):
    return torch.tensor([[list(v)]], dtype=torch.float32)


def test_between_box_overlap_gives_intersection():
    s, o = _b(0.1, 0.1, 0.6, 0.6), _b(0.4, 0.3, 0.9, 0.8)
    assert torch.allclose(between_box(s, o), _b(0.4, 0.3, 0.6, 0.6))


def test_between_box_gap_between_disjoint_boxes():
    s, o = _b(0.0, 0.2, 0.3, 0.5), _b(0.7, 0.4, 0.9, 0.9)
    # x: the gap 0.3..0.7; y: the overlap 0.4..0.5
    assert torch.allclose(between_box(s, o), _b(0.3, 0.4, 0.7, 0.5))


def test_between_box_nested_gives_inner_extent():
    outer, inner = _b(0.1, 0.1, 0.9, 0.9), _b(0.3, 0.4, 0.5, 0.6)
    assert torch.allclose(between_box(outer, inner), inner)
    assert torch.allclose(between_box(inner, outer), inner)


def test_between_box_identical_boxes_is_the_box():
    box = _b(0.2, 0.3, 0.7, 0.8)
    assert torch.equal(between_box(box, box), box)


def test_between_box_is_symmetric_and_union_contains_both():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(4, 7, 4, generator=g)
    b = torch.rand(4, 7, 4, generator=g)
    a = torch.cat([a[..., :2].minimum(a[..., 2:]), a[..., :2].maximum(a[..., 2:])], -1)
    b = torch.cat([b[..., :2].minimum(b[..., 2:]), b[..., :2].maximum(b[..., 2:])], -1)
    assert torch.equal(between_box(a, b), between_box(b, a))
    u = union_box(a, b)
    assert (u[..., :2] <= a[..., :2]).all() and (u[..., 2:] >= b[..., 2:]).all()


def _inputs(b=2, n=30, d=768, real=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    lo = torch.rand(b, n, 2, generator=g) * 0.5
    boxes_s = torch.cat([lo, lo + 0.3], -1)
    lo = torch.rand(b, n, 2, generator=g) * 0.5
    boxes_o = torch.cat([lo, lo + 0.4], -1)
    masks = torch.zeros(b, n)
    masks[:, :real] = 1
    emb = [torch.randn(b, n, d, generator=g) for _ in range(3)]
    return dict(
        subject_boxes=boxes_s, object_boxes=boxes_o, masks=masks,
        subject_positive_embeddings=emb[0], object_positive_embeddings=emb[1], action_positive_embeddings=emb[2],
    )


EXPECTED_SHAPES = {
    "linears.0.weight": (512, 832), "linears.0.bias": (512,), "linears.2.weight": (512, 512),
    "linears.2.bias": (512,), "linears.4.weight": (768, 512), "linears.4.bias": (768,),
    "linear_action.0.weight": (512, 832), "linear_action.0.bias": (512,), "linear_action.2.weight": (512, 512),
    "linear_action.2.bias": (512,), "linear_action.4.weight": (768, 512), "linear_action.4.bias": (768,),
    "null_positive_feature": (768,), "null_action_feature": (768,), "null_position_feature": (64,),
    "interaction_embedding.emb.weight": (30, 768), "position_embedding.emb.weight": (3, 768),
}


def test_tokenizer_has_the_official_names_and_shapes():
    tok = InteractionTokenizer()
    assert {k: tuple(v.shape) for k, v in tok.state_dict().items()} == EXPECTED_SHAPES


def test_tokenizer_output_order_and_embeddings_follow_reference():
    torch.manual_seed(0)
    tok = InteractionTokenizer()
    with torch.no_grad():
        for p in (tok.null_positive_feature, tok.null_action_feature, tok.null_position_feature):
            p.normal_()
    x = _inputs()
    out = tok(**x)
    assert out.shape == (2, 90, 768)
    # Recompute the reference formula by hand: [text*m + (1-m)*null ; fourier*m + (1-m)*null] -> MLP
    m = x["masks"].unsqueeze(-1)

    def token(mlp, text, boxes, null_text):
        f = get_fourier_embeds_from_boundingbox(8, boxes)
        t = text * m + (1 - m) * null_text
        f = f * m + (1 - m) * tok.null_position_feature
        return mlp(torch.cat([t, f], -1))

    inst = tok.interaction_embedding.emb.weight
    role = tok.position_embedding.emb.weight
    s = token(tok.linears, x["subject_positive_embeddings"], x["subject_boxes"], tok.null_positive_feature)
    o = token(tok.linears, x["object_positive_embeddings"], x["object_boxes"], tok.null_positive_feature)
    a = token(tok.linear_action, x["action_positive_embeddings"],
              between_box(x["subject_boxes"], x["object_boxes"]), tok.null_action_feature)
    expected = torch.cat([s + inst + role[0], a + inst + role[2], o + inst + role[1]], 1)
    assert torch.allclose(out, expected, atol=1e-5)


def test_padding_slots_ignore_their_inputs():
    tok = InteractionTokenizer()
    x = _inputs()
    y = {k: v.clone() for k, v in x.items()}
    y["subject_positive_embeddings"][:, 5:] = 123.0
    y["object_boxes"][:, 5:] = 0.9
    assert torch.equal(tok(**x), tok(**y))


def test_precomputed_tokens_pass_through():
    tok = InteractionTokenizer()
    objs = torch.randn(1, 90, 768)
    assert tok(objs=objs) is objs


def test_ablations_change_structure():
    x = _inputs()
    no_action = InteractionTokenizer(use_action_tokens=False)
    assert no_action(**x).shape == (2, 60, 768)
    assert not any(k.startswith("linear_action") for k in no_action.state_dict())
    assert "interaction_embedding.emb.weight" not in InteractionTokenizer(use_instance_embedding=False).state_dict()
    assert "position_embedding.emb.weight" not in InteractionTokenizer(use_role_embedding=False).state_dict()
    torch.manual_seed(0)
    between = InteractionTokenizer()
    torch.manual_seed(0)
    union = InteractionTokenizer(action_box="union")
    out_b, out_u = between(**x), union(**x)
    assert torch.equal(out_b[:, :30], out_u[:, :30]) and not torch.allclose(out_b[:, 30:60], out_u[:, 30:60])


def test_gligen_grounding_has_gligen_keys_and_interleaves_entities():
    g = GLIGENGrounding()
    assert set(g.state_dict()) == {
        "linears.0.weight", "linears.0.bias", "linears.2.weight", "linears.2.bias", "linears.4.weight",
        "linears.4.bias", "null_positive_feature", "null_position_feature",
    }
    x = _inputs()
    out = g(**x)
    assert out.shape == (2, 60, 768)
    single = g(boxes=x["subject_boxes"][:, :1], masks=x["masks"][:, :1],
               positive_embeddings=x["subject_positive_embeddings"][:, :1])
    assert torch.allclose(out[:, :1], single, atol=1e-6)


def test_config_rebuilds_the_same_module():
    from interactdiffusion.models.grounding import build_grounding

    for module in (InteractionTokenizer(positive_len=32, out_dim=32, hidden_dim=16, use_role_embedding=False,
                                        action_box="union"), GLIGENGrounding(positive_len=32, out_dim=32, hidden_dim=16)):
        config = dict(module.config)
        rebuilt = build_grounding(config.pop("kind"), **config)
        assert type(rebuilt) is type(module) and rebuilt.config == module.config
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in module.state_dict().items()}
