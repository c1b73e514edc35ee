"""InToken + InBedding: turn <subject, action, object> triplets with boxes into grounding tokens.

The module is installed as the UNet's ``position_net``; diffusers' gated transformer blocks (the
InFormer) attend to the tokens it returns. Parameter names and shapes equal the official release so
its weights load unchanged (REFERENCE §1).
"""

from __future__ import annotations

import torch
from diffusers.models.embeddings import get_fourier_embeds_from_boundingbox
from torch import nn

FOURIER_FREQS = 8
POSITION_DIM = FOURIER_FREQS * 2 * 4  # [frequency][sin, cos][x1, y1, x2, y2]
ROLE_SUBJECT, ROLE_OBJECT, ROLE_ACTION = 0, 1, 2


def between_box(subject_boxes: torch.Tensor, object_boxes: torch.Tensor) -> torch.Tensor:
    """The action region: per axis the 2nd and 3rd smallest of the four coordinates.

    Overlapping boxes give their intersection, disjoint boxes the gap between them, nested boxes the
    inner box's extent along that axis.
    """
    xs = torch.stack(
        [subject_boxes[..., 0], subject_boxes[..., 2], object_boxes[..., 0], object_boxes[..., 2]], -1
    ).sort(dim=-1).values
    ys = torch.stack(
        [subject_boxes[..., 1], subject_boxes[..., 3], object_boxes[..., 1], object_boxes[..., 3]], -1
    ).sort(dim=-1).values
    return torch.stack([xs[..., 1], ys[..., 1], xs[..., 2], ys[..., 2]], dim=-1)


def union_box(subject_boxes: torch.Tensor, object_boxes: torch.Tensor) -> torch.Tensor:
    """The smallest box holding both (an ablation of the between box)."""
    return torch.cat(
        [torch.minimum(subject_boxes[..., :2], object_boxes[..., :2]),
         torch.maximum(subject_boxes[..., 2:], object_boxes[..., 2:])],
        dim=-1,
    )


ACTION_BOXES = {"between": between_box, "union": union_box}


def _token_mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, hidden_dim), nn.SiLU(),
        nn.Linear(hidden_dim, out_dim),
    )


class LearnedEmbedding(nn.Module):
    """A table of learned vectors; the ``emb`` attribute keeps the official key name ``*.emb.weight``."""

    def __init__(self, num: int, dim: int):
        super().__init__()
        self.emb = nn.Embedding(num, dim)
        nn.init.normal_(self.emb.weight, std=0.02)


class InteractionTokenizer(nn.Module):
    """InToken + InBedding: per interaction a subject, an action and an object token.

    Tokens are ordered ``[subjects(N), actions(N), objects(N)]``. Padding slots (mask 0) get the
    learned null features and still receive the instance and role embeddings, as in the release.
    The ablation switches remove the instance embedding, the role embedding or the action tokens, or
    place the action on the union box instead of the between box.
    """

    def __init__(
        self,
        positive_len: int = 768,
        out_dim: int = 768,
        hidden_dim: int = 512,
        max_interactions: int = 30,
        use_instance_embedding: bool = True,
        use_role_embedding: bool = True,
        use_action_tokens: bool = True,
        action_box: str = "between",
    ):
        super().__init__()
        if action_box not in ACTION_BOXES:
            raise ValueError(f"action_box must be one of {sorted(ACTION_BOXES)}, got {action_box!r}")
        # The constructor arguments: saved beside the weights so a folder rebuilds exactly this module.
        self.config = {
            "kind": "interactdiffusion", "positive_len": positive_len, "out_dim": out_dim, "hidden_dim": hidden_dim,
            "max_interactions": max_interactions, "use_instance_embedding": use_instance_embedding,
            "use_role_embedding": use_role_embedding, "use_action_tokens": use_action_tokens,
            "action_box": action_box,
        }
        self.positive_len = positive_len
        self.out_dim = out_dim
        self.max_interactions = max_interactions
        self.use_action_tokens = use_action_tokens
        self.action_box = action_box

        self.linears = _token_mlp(positive_len + POSITION_DIM, hidden_dim, out_dim)
        if use_action_tokens:
            self.linear_action = _token_mlp(positive_len + POSITION_DIM, hidden_dim, out_dim)
        self.null_positive_feature = nn.Parameter(torch.zeros(positive_len))
        if use_action_tokens:
            self.null_action_feature = nn.Parameter(torch.zeros(positive_len))
        self.null_position_feature = nn.Parameter(torch.zeros(POSITION_DIM))
        self.interaction_embedding = (
            LearnedEmbedding(max_interactions, out_dim) if use_instance_embedding else None
        )
        self.position_embedding = LearnedEmbedding(3, out_dim) if use_role_embedding else None

    @property
    def tokens_per_interaction(self) -> int:
        return 3 if self.use_action_tokens else 2

    def _embed(self, mlp: nn.Module, text, boxes, masks, null_text) -> torch.Tensor:
        fourier = get_fourier_embeds_from_boundingbox(FOURIER_FREQS, boxes).to(text.dtype)
        text = torch.lerp(null_text.to(text.dtype).expand_as(text), text, masks)
        fourier = torch.lerp(self.null_position_feature.to(text.dtype).expand_as(fourier), fourier, masks)
        return mlp(torch.cat([text, fourier], dim=-1))

    def forward(
        self,
        subject_boxes: torch.Tensor | None = None,
        object_boxes: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
        subject_positive_embeddings: torch.Tensor | None = None,
        object_positive_embeddings: torch.Tensor | None = None,
        action_positive_embeddings: torch.Tensor | None = None,
        objs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Grounding tokens [B, 3N, out_dim] (or [B, 2N, out_dim] without action tokens).

        ``objs`` passes precomputed tokens straight through: the tokens do not depend on the timestep,
        so the pipeline computes them once per scene instead of once per denoising step.
        """
        if objs is not None:
            return objs
        n = subject_boxes.shape[1]
        if n > self.max_interactions:
            raise ValueError(f"{n} interactions; the tokenizer was built for at most {self.max_interactions}")
        dtype = subject_positive_embeddings.dtype
        m = masks.to(dtype).unsqueeze(-1)
        subjects = self._embed(self.linears, subject_positive_embeddings, subject_boxes, m, self.null_positive_feature)
        objects = self._embed(self.linears, object_positive_embeddings, object_boxes, m, self.null_positive_feature)
        groups = [subjects]
        roles = [ROLE_SUBJECT]
        if self.use_action_tokens:
            action_boxes = ACTION_BOXES[self.action_box](subject_boxes, object_boxes)
            actions = self._embed(
                self.linear_action, action_positive_embeddings, action_boxes, m, self.null_action_feature
            )
            groups.append(actions)
            roles.append(ROLE_ACTION)
        groups.append(objects)
        roles.append(ROLE_OBJECT)
        instance = self.interaction_embedding.emb.weight[:n] if self.interaction_embedding is not None else None
        out = []
        for tokens, role in zip(groups, roles):
            if instance is not None:
                tokens = tokens + instance.to(tokens.dtype)
            if self.position_embedding is not None:
                tokens = tokens + self.position_embedding.emb.weight[role].to(tokens.dtype)
            out.append(tokens)
        return torch.cat(out, dim=1)


class GLIGENGrounding(nn.Module):
    """GLIGEN's text-box grounding fed from interactions: subject and object as separate boxed phrases.

    Holds diffusers' ``GLIGENTextBoundingboxProjection`` under the same attribute names, so the state
    dict equals GLIGEN's text-box ``position_net`` and its weights load directly. There is no action
    token: tokens are ``[S1, O1, S2, O2, ...]`` with GLIGEN's null features on padding.
    """

    def __init__(self, positive_len: int = 768, out_dim: int = 768, hidden_dim: int = 512, max_interactions: int = 30):
        super().__init__()
        self.config = {"kind": "gligen", "positive_len": positive_len, "out_dim": out_dim, "hidden_dim": hidden_dim,
                       "max_interactions": max_interactions}
        self.positive_len = positive_len
        self.out_dim = out_dim
        self.max_interactions = max_interactions
        self.linears = _token_mlp(positive_len + POSITION_DIM, hidden_dim, out_dim)
        self.null_positive_feature = nn.Parameter(torch.zeros(positive_len))
        self.null_position_feature = nn.Parameter(torch.zeros(POSITION_DIM))

    tokens_per_interaction = 2

    def forward(
        self,
        subject_boxes=None,
        object_boxes=None,
        masks=None,
        subject_positive_embeddings=None,
        object_positive_embeddings=None,
        action_positive_embeddings=None,
        objs=None,
        boxes=None,
        positive_embeddings=None,
    ) -> torch.Tensor:
        """Accepts interaction inputs or GLIGEN's own (``boxes``, ``masks``, ``positive_embeddings``)."""
        if objs is not None:
            return objs
        if boxes is None:
            b, n, _ = subject_boxes.shape
            boxes = torch.stack([subject_boxes, object_boxes], dim=2).reshape(b, 2 * n, 4)
            positive_embeddings = torch.stack(
                [subject_positive_embeddings, object_positive_embeddings], dim=2
            ).reshape(b, 2 * n, -1)
            masks = masks.repeat_interleave(2, dim=1)
        dtype = positive_embeddings.dtype
        m = masks.to(dtype).unsqueeze(-1)
        fourier = get_fourier_embeds_from_boundingbox(FOURIER_FREQS, boxes).to(dtype)
        text = torch.lerp(self.null_positive_feature.to(dtype).expand_as(positive_embeddings), positive_embeddings, m)
        fourier = torch.lerp(self.null_position_feature.to(dtype).expand_as(fourier), fourier, m)
        return self.linears(torch.cat([text, fourier], dim=-1))


def build_grounding(kind: str = "interactdiffusion", **kwargs) -> nn.Module:
    """The ``position_net`` for a model variant (``interactdiffusion`` or ``gligen``)."""
    if kind == "interactdiffusion":
        return InteractionTokenizer(**kwargs)
    if kind == "gligen":
        allowed = {"positive_len", "out_dim", "hidden_dim", "max_interactions"}
        unknown = set(kwargs) - allowed
        if unknown:
            raise ValueError(f"the gligen grounding takes no {sorted(unknown)}")
        return GLIGENGrounding(**kwargs)
    raise ValueError(f"unknown grounding kind {kind!r}: use 'interactdiffusion' or 'gligen'")
