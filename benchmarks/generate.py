"""Generation speed: batching on the tiny backbone, and the interaction module's cost per SD-1.x step.

1. Images/s of ``InteractDiffusionPipeline`` on the tiny backbone (32x32, PLMS, CFG 7.5, beta 1) at batch
   size 1 and 8 over the same scenes: what batching many scenes per call buys.
2. One denoising step as the pipeline runs it at SD-1.x shape (``SD1_UNET_CONFIG``, 32x32 latent, CFG
   batch 2: unconditional + conditional in one UNet call, then guidance and a PLMS step):
   - with the interaction module: 16 fusers on, grounding tokens (30 slots) precomputed once;
   - without: the same UNet with no ``gligen`` kwargs, so diffusers skips every fuser, leaving exactly the
     plain SD UNet's computation (one 3.4 GB model instead of two);
   - with the tokens recomputed every step (what a pipeline that does not cache them pays).
   Variants alternate within each repeat so a busy machine slows them alike; medians are printed.

Run: ``python benchmarks/generate.py`` (add ``--device cuda`` on a GPU).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from interactdiffusion.conditioning import null_grounding_kwargs
from interactdiffusion.models.backbone import SD_SCHEDULER_CONFIG, build_tiny_backbone
from interactdiffusion.models.unet import SD1_UNET_CONFIG, adapter_named_parameters, build_grounded_unet
from interactdiffusion.pipeline import InteractDiffusionPipeline, make_scheduler
from interactdiffusion.scene import Interaction, Scene


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def bench_scenes(n: int) -> list[Scene]:
    g = torch.Generator().manual_seed(0)
    scenes = []
    for k in range(n):
        interactions = []
        for _ in range(1 + k % 3):
            x, y = (torch.rand(2, generator=g) * 0.5).tolist()
            interactions.append(Interaction("person", ("riding", "holding", "feeding")[k % 3], "horse",
                                            (x, y, x + 0.4, y + 0.45), (x + 0.2, y + 0.1, x + 0.5, y + 0.5)))
        scenes.append(Scene(str(k), tuple(interactions)))
    return scenes


def tiny_throughput(device: str, num_scenes: int, steps: int, repeats: int) -> None:
    backbone = build_tiny_backbone(seed=0)
    with torch.no_grad():
        for name, param in adapter_named_parameters(backbone.unet):
            if "alpha" in name:
                param.fill_(0.8)
    pipe = InteractDiffusionPipeline.from_backbone(backbone, device=device)
    pipe.set_progress_bar_config(disable=True)
    scenes = bench_scenes(num_scenes)
    pipe.encode_phrases(sorted({p for s in scenes for i in s.interactions for p in (i.subject, i.object, i.action)}))

    def run(batch_size: int):
        def go():
            for start in range(0, len(scenes), batch_size):
                pipe(scenes[start:start + batch_size], num_inference_steps=steps, output_type="np",
                     interactdiffusion_scheduled_sampling_beta=1.0)
        return go

    one, eight = run(1), run(8)
    one(), eight()  # warm-up
    pairs = [(timed(one, device), timed(eight, device)) for _ in range(repeats)]
    t1 = statistics.median(a for a, _ in pairs)
    t8 = statistics.median(b for _, b in pairs)
    print(f"tiny backbone, {num_scenes} scenes x {steps} PLMS steps, 32x32, CFG on ({device}):")
    print(f"  batch 1: {num_scenes / t1:8.2f} images/s")
    print(f"  batch 8: {num_scenes / t8:8.2f} images/s")
    print(f"  batch 8 / batch 1 throughput: {t1 / t8:.2f}x")


def sd1_step_cost(device: str, repeats: int, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    unet = build_grounded_unet(SD1_UNET_CONFIG).eval()
    if dtype != torch.float32:
        unet.to(dtype=dtype)
    unet.to(device)
    with torch.no_grad():
        for name, param in adapter_named_parameters(unet):
            if "alpha" in name:
                param.fill_(0.5)  # a trained module: the fusers do contribute
    scheduler = make_scheduler("plms", SD_SCHEDULER_CONFIG)
    scheduler.set_timesteps(50, device=device)
    t = scheduler.timesteps[10]
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, 32, 32, generator=g).to(device)
    text = torch.randn(2, 77, 768, generator=g).to(device, dtype)
    cond = null_grounding_kwargs(1, 768, device=device, dtype=dtype)
    cond["masks"][:, :4] = 1
    cond["subject_boxes"][:, :4] = torch.tensor([0.1, 0.1, 0.5, 0.9])
    cond["object_boxes"][:, :4] = torch.tensor([0.3, 0.4, 0.9, 0.95])
    for key in ("subject_positive_embeddings", "object_positive_embeddings", "action_positive_embeddings"):
        cond[key][:, :4] = torch.randn(4, 768, generator=g).to(device, dtype)
    null = null_grounding_kwargs(1, 768, device=device, dtype=dtype)
    both = {k: torch.cat([null[k], cond[k]]) for k in cond}
    with torch.no_grad():
        objs = unet.position_net(**both)

    def step(gligen):
        def go():
            with torch.no_grad():
                model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
                extra = {"gligen": gligen} if gligen is not None else None
                noise = unet(model_input.to(dtype), t, encoder_hidden_states=text, cross_attention_kwargs=extra,
                             return_dict=False)[0].float()
                uncond, c = noise.chunk(2)
                guided = uncond + 7.5 * (c - uncond)
                scheduler.step(guided, t, latents)
                scheduler.ets.clear()
                scheduler.counter = 0
        return go

    without, with_, recompute = step(None), step({"objs": objs}), step(both)
    for fn in (without, with_, recompute):
        fn()  # warm-up
    rows = [(timed(without, device), timed(with_, device), timed(recompute, device)) for _ in range(repeats)]
    base = statistics.median(r[0] for r in rows)
    grounded = statistics.median(r[1] for r in rows)
    again = statistics.median(r[2] for r in rows)
    ratio = statistics.median(r[1] / r[0] for r in rows)
    ratio_again = statistics.median(r[2] / r[1] for r in rows)
    print(f"SD-1.x UNet, one denoising step, 32x32 latent, CFG batch 2, {str(dtype).split('.')[-1]} ({device}):")
    print(f"  without the interaction module: {base * 1000:9.1f} ms")
    print(f"  with it (tokens computed once):  {grounded * 1000:9.1f} ms   ratio {ratio:.3f}x")
    print(f"  with tokens recomputed per step: {again * 1000:9.1f} ms   vs once {ratio_again:.3f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--scenes", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default=None, help="fp32 | fp16 | bf16 for the SD-1.x step (default: "
                        "fp16 on a GPU, fp32 on the CPU)")
    parser.add_argument("--skip-sd1", action="store_true", help="only the tiny-backbone throughput")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, load average "
          f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "")
    tiny_throughput(args.device, args.scenes, args.steps, args.repeats)
    if not args.skip_sd1:
        from interactdiffusion.pipeline import resolve_dtype

        dtype = resolve_dtype(args.precision) or (torch.float16 if args.device.startswith("cuda") else torch.float32)
        sd1_step_cost(args.device, args.repeats, dtype)


if __name__ == "__main__":
    main()
