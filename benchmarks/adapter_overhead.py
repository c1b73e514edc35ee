"""What the interaction module costs: one SD-1.x UNet step with and without it, on CPU (batch 1).

One grounded UNet (16 fusers + tokenizer) is timed with its grounding ("with") and without any
``gligen`` kwargs ("without"): diffusers then skips every fuser, leaving the computation of the plain
``UNet2DConditionModel(**SD1_UNET_CONFIG)`` with its default SDPA attention, and one 3.4 GB model
is built instead of two.

- forward (inference): grounding tokens are computed once beforehand and passed as ``objs=``, as the
  pipeline does, so each step pays only for the fusers.
- forward+backward (training): the adapter is trainable and SD frozen; the tokenizer runs inside the
  step because its weights train. The baseline back-propagates the frozen UNet to its input latent,
  the least any adapter inside the UNet must pay.

"Without" and "with" alternate within each repeat, so a busy machine slows both alike; the script
prints the medians and the median of the per-repeat ratios. About 3 minutes on 2 idle CPU cores.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from interactdiffusion.models.unet import SD1_UNET_CONFIG, build_grounded_unet, freeze_all_but_adapter


def seconds(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def compare(without, with_, repeats: int) -> tuple[float, float, float]:
    """Median seconds of each and the median of the per-repeat ratios, after one warm-up each."""
    without()
    with_()
    pairs = [(seconds(without), seconds(with_)) for _ in range(repeats)]
    return (statistics.median(a for a, _ in pairs), statistics.median(b for _, b in pairs),
            statistics.median(b / a for a, b in pairs))


def grounding_inputs(n: int = 30, real: int = 4, dim: int = 768, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    corner = torch.rand(1, n, 2, generator=g) * 0.5
    masks = torch.zeros(1, n)
    masks[:, :real] = 1
    return {
        "subject_boxes": torch.cat([corner, corner + 0.4], -1),
        "object_boxes": torch.cat([corner.flip(-1), corner.flip(-1) + 0.3], -1),
        "masks": masks,
        "subject_positive_embeddings": torch.randn(1, n, dim, generator=g),
        "object_positive_embeddings": torch.randn(1, n, dim, generator=g),
        "action_positive_embeddings": torch.randn(1, n, dim, generator=g),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latent", type=int, default=32, help="latent side (32 = a 256x256 image)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    unet = build_grounded_unet(SD1_UNET_CONFIG)
    trainable = freeze_all_but_adapter(unet)

    latent = torch.randn(1, 4, args.latent, args.latent)
    timestep = torch.tensor([500])
    context = torch.randn(1, 77, SD1_UNET_CONFIG["cross_attention_dim"])
    inputs = grounding_inputs()
    with torch.no_grad():
        objs = unet.position_net(**inputs)

    @torch.no_grad()
    def forward_plain():
        unet(latent, timestep, context)

    @torch.no_grad()
    def forward_grounded():
        unet(latent, timestep, context, cross_attention_kwargs={"gligen": {"objs": objs}})

    def train_plain():
        x = latent.clone().requires_grad_(True)
        unet(x, timestep, context).sample.square().mean().backward()

    def train_grounded():
        unet.zero_grad(set_to_none=True)
        out = unet(latent, timestep, context, cross_attention_kwargs={"gligen": inputs}).sample
        out.square().mean().backward()

    print(f"SD-1.x UNet, latent 1x4x{args.latent}x{args.latent}, CPU, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; adapter {trainable:,} trainable parameters; median of {args.repeats}",
          flush=True)
    for name, without, with_ in (("forward (objs precomputed)", forward_plain, forward_grounded),
                                 ("forward+backward (adapter)", train_plain, train_grounded)):
        base, ours, ratio = compare(without, with_, args.repeats)
        print(f"{name:28s} without {base * 1000:8.1f} ms   with {ours * 1000:8.1f} ms   ratio {ratio:5.2f}", flush=True)


if __name__ == "__main__":
    main()
