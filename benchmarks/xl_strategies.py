"""InteractDiffusion-XL training per strategy: measured at the tiny XL shape, estimated at SDXL size.

1. Measured (CPU, tiny XL backbone, batch 2, 32 px): trainable parameters, AdamW state bytes per rank and
   step time for one process (what each DDP rank holds) and for FSDP over two CPU ranks (gloo; the fusers'
   0-dim gates ignored as ``trainer=fsdp`` does). DeepSpeed and 8-bit AdamW need CUDA: reported as such.
2. Estimated (no weights: parameter counts of the models built on the meta device): the memory each GPU
   needs for the full XL adapter (1.8e9 trainable) under DDP, DeepSpeed ZeRO-2 and FSDP, with AdamW and with
   8-bit AdamW, for 1-8 GPUs, marked where it fits a 24 GB card. Weights, gradients and optimiser state
   only: activations come on top (batch 1 at 1024² with gradient checkpointing: a few GB).

    python benchmarks/xl_strategies.py [--steps 3] [--no-measure]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

GIB = 1024**3
CARD_GB = 24
CLIP_L = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
          "projection_dim": 768, "vocab_size": 49408}
BIGG = {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 20,
        "projection_dim": 1280, "vocab_size": 49408, "hidden_act": "gelu"}
SDXL_VAE = {"block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
            "up_block_types": ["UpDecoderBlock2D"] * 4, "layers_per_block": 2, "latent_channels": 4}


# -- 1. measured at the tiny XL shape -------------------------------------------------------------------
def _grounding(batch: int, dim: int) -> dict[str, torch.Tensor]:
    return {"subject_boxes": torch.rand(batch, 30, 4), "object_boxes": torch.rand(batch, 30, 4),
            "masks": torch.ones(batch, 30),
            **{f"{r}_positive_embeddings": torch.randn(batch, 30, dim) for r in ("subject", "object", "action")}}


def _train_steps(unet, backbone, steps: int, after_backward=None) -> tuple[float, int]:
    """Median step time (s) and this rank's AdamW state bytes."""
    optimizer = torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=1e-4)
    cond = backbone.unet_text_conditions(["a person riding a horse", "a dog"], "cpu", size=(32, 32))
    grounding = _grounding(2, backbone.phrase_dim)
    times = []
    for _ in range(steps + 1):  # the first step (allocations) is not timed
        start = time.perf_counter()
        out = unet(torch.randn(2, 4, 16, 16), torch.tensor([10, 500]), **cond,
                   cross_attention_kwargs={"gligen": dict(grounding)}).sample
        out.pow(2).mean().backward()
        if after_backward is not None:
            after_backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    state = sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values()
                if torch.is_tensor(v) and v.dim() > 0)
    return statistics.median(times[1:]), state


def _tiny_backbone():
    from interactdiffusion.models.sdxl import build_tiny_xl_backbone

    backbone = build_tiny_xl_backbone(grounding={"max_interactions": 32})
    trainable = backbone.freeze()
    return backbone, trainable


def measure_single(steps: int) -> dict:
    backbone, trainable = _tiny_backbone()
    step, state = _train_steps(backbone.unet, backbone, steps)
    return {"strategy": "one process (= each DDP rank)", "trainable": trainable, "state": state, "step": step}


def _fsdp_rank(rank: int, world: int, port: int, steps: int, results) -> None:
    import hydra
    import torch.distributed as dist
    from omegaconf import OmegaConf
    from torch.distributed.fsdp import FullyShardedDataParallel, ShardingStrategy

    from interactdiffusion.config_path import config_dir
    from interactdiffusion.training.fsdp_scalars import scalar_parameters

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    try:
        backbone, trainable = _tiny_backbone()
        gates = scalar_parameters(backbone.unet)
        policy = hydra.utils.instantiate(
            OmegaConf.load(Path(config_dir()) / "trainer" / "fsdp.yaml").strategy.auto_wrap_policy)
        unet = FullyShardedDataParallel(
            backbone.unet, device_id=torch.device("cpu"), ignored_states=gates, use_orig_params=True,
            auto_wrap_policy=policy, sharding_strategy=ShardingStrategy.FULL_SHARD,
        )

        def average_gates():
            flat = torch.stack([p.grad for p in gates])
            dist.all_reduce(flat)
            for p, g in zip(gates, flat / world):
                p.grad.copy_(g)

        step, state = _train_steps(unet, backbone, steps, average_gates)
        results.put((rank, trainable, state, step))
    finally:
        dist.destroy_process_group()


def measure_fsdp(steps: int, world: int = 2) -> dict:
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.get_context("spawn").Queue()
    mp.start_processes(_fsdp_rank, args=(world, port, steps, results), nprocs=world, start_method="spawn")
    rows = sorted(results.get(timeout=120) for _ in range(world))
    return {"strategy": f"FSDP FULL_SHARD, {world} CPU ranks (gloo)", "trainable": rows[0][1],
            "state": max(r[2] for r in rows), "step": max(r[3] for r in rows),
            "note": "state: the larger rank's share; " + ", ".join(f"rank {r[0]} {r[2]:,} B" for r in rows)}


# -- 2. estimated at SDXL size -----------------------------------------------------------------------------
def sdxl_counts() -> dict[str, int]:
    """Parameter counts of SDXL + the XL adapter, built on the meta device (nothing downloads)."""
    from diffusers import AutoencoderKL
    from diffusers.models.attention import BasicTransformerBlock, GatedSelfAttentionDense
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from interactdiffusion.models.sdxl import SDXL_UNET_CONFIG, XL_GROUNDING
    from interactdiffusion.models.unet import build_grounded_unet, is_adapter_key

    with torch.device("meta"):
        unet = build_grounded_unet(SDXL_UNET_CONFIG, XL_GROUNDING)
        clip_l = CLIPTextModel(CLIPTextConfig(**CLIP_L))
        bigg = CLIPTextModelWithProjection(CLIPTextConfig(**BIGG))
        vae = AutoencoderKL(**SDXL_VAE)
    params = dict(unet.named_parameters())
    largest_unit = max(sum(p.numel() for p in m.parameters()) - sum(p.numel() for p in m.fuser.parameters())
                       for m in unet.modules() if isinstance(m, BasicTransformerBlock))
    largest_unit = max(largest_unit, *(sum(p.numel() for p in m.parameters()) for m in unet.modules()
                                       if isinstance(m, GatedSelfAttentionDense)))
    return {
        "trainable": sum(p.numel() for k, p in params.items() if is_adapter_key(k)),
        "unet_frozen": sum(p.numel() for k, p in params.items() if not is_adapter_key(k)),
        "text_encoders": sum(p.numel() for p in clip_l.parameters()) + sum(p.numel() for p in bigg.parameters()),
        "vae": sum(p.numel() for p in vae.parameters()),
        "largest_unit": largest_unit,
    }


def per_gpu_bytes(c: dict[str, int], strategy: str, gpus: int, state_bytes: int) -> float:
    """Weights + gradients + optimiser state per GPU (bytes); frozen weights in half precision, the
    trainable ones fp32 with fp32 gradients (Lightning mixed precision), ``state_bytes`` per trainable
    parameter for the optimiser (AdamW 8, 8-bit AdamW 2)."""
    t, frozen = c["trainable"], c["unet_frozen"] + c["text_encoders"] + c["vae"]
    if strategy == "DDP":  # everything replicated
        return 2 * frozen + 4 * t + 4 * t + state_bytes * t
    if strategy == "ZeRO-2":  # half-precision weights replicated; grads + fp32 master + state partitioned
        return 2 * frozen + 2 * t + (2 * t + 4 * t + state_bytes * t) / gpus
    if strategy == "FSDP":  # all sharded (frozen-only units: no gradients); one unit gathered + one prefetched
        return (2 * frozen + 4 * t + 4 * t + state_bytes * t) / gpus + 2 * 2 * c["largest_unit"]
    raise ValueError(strategy)


def estimate_table(c: dict[str, int]) -> list[str]:
    lines = [
        f"SDXL + XL adapter: trainable {c['trainable']:,}; frozen UNet {c['unet_frozen']:,}; "
        f"text encoders {c['text_encoders']:,}; VAE {c['vae']:,}; largest FSDP unit {c['largest_unit']:,}",
        "",
        f"| strategy | optimiser | 1 GPU | 2 GPUs | 4 GPUs | 8 GPUs | fits {CARD_GB} GB from |",
        "|---|---|---|---|---|---|---|",
    ]
    for strategy in ("DDP", "ZeRO-2", "FSDP"):
        for optimiser, state in (("AdamW", 8), ("8-bit AdamW", 2)):
            gb = {n: per_gpu_bytes(c, strategy, n, state) / GIB for n in (1, 2, 4, 8)}
            fits = next((f"{n} GPUs" for n in (1, 2, 4, 8) if gb[n] <= CARD_GB), "never (<= 8 GPUs)")
            lines.append(f"| {strategy} | {optimiser} | " + " | ".join(f"{gb[n]:.1f} GB" for n in (1, 2, 4, 8))
                         + f" | {fits} |")
    lines += ["", "(weights + gradients + optimiser state; activations come on top)"]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--no-measure", action="store_true", help="only the SDXL-size estimate")
    args = parser.parse_args()
    torch.manual_seed(0)
    if not args.no_measure:
        torch.set_num_threads(1)
        rows = [measure_single(args.steps), measure_fsdp(args.steps)]
        print("Measured at the tiny XL shape (CPU, batch 2, 32 px, median step after one warm-up):")
        print("| strategy | trainable | AdamW state per rank | step |")
        print("|---|---|---|---|")
        for r in rows:
            print(f"| {r['strategy']} | {r['trainable']:,} | {r['state']:,} B | {r['step'] * 1000:.0f} ms |")
        print(f"AdamW state ratio FSDP/one process: {rows[1]['state'] / rows[0]['state']:.2f}; {rows[1]['note']}")
        print("DeepSpeed ZeRO-2 and 8-bit AdamW: not measured here (they need CUDA; deepspeed/bitsandbytes).")
        print()
    print("Estimated per GPU for the full XL adapter:")
    print("\n".join(estimate_table(sdxl_counts())))


if __name__ == "__main__":
    main()
