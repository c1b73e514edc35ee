"""What one training step costs: samples/s and peak memory, images vs the latent cache, on CPU.

A training step here is what ``InteractDiffusionModule.training_step`` does plus the optimiser:
posterior sample (VAE encode of the images, or ``mean + std * noise`` from the latent cache), caption
encoding with the frozen CLIP text model, the grounded UNet forward, the backward into the adapter and
one AdamW step. Two backbones, both with random weights (no download):

- ``tiny``: the offline test backbone at 32 px (16x16 latent);
- ``sd1``: SD-1.x shapes (UNet 320-640-1280-1280 with 16 fusers, VAE 128-256-512-512, CLIP ViT-L/14 text)
  at 256 px, i.e. a 32x32 latent.

Each (backbone, input) pair runs in a fresh process so its peak resident memory is its own; the
"step" peak is the high-water mark during the timed steps minus the resident size after building
(activations, gradients and optimiser state). Printed: the table and the image/cache ratios. Under
5 minutes on 2 idle CPU cores with the defaults.

    python benchmarks/train_step.py [--backbones tiny sd1] [--batch 2] [--steps 3] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

SD1_VAE = {
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "layers_per_block": 2,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}
CLIP_L_TEXT = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
               "projection_dim": 768}


def backbone_config(name: str) -> dict:
    if name == "tiny":
        from omegaconf import OmegaConf

        from interactdiffusion.config_path import config_dir

        return OmegaConf.to_container(OmegaConf.load(Path(config_dir()) / "backbone" / "tiny.yaml"))
    if name == "sd1":
        from interactdiffusion.models.unet import SD1_UNET_CONFIG

        return {"kind": "tiny", "name": "sd1-shape", "seed": 0, "resolution": 256,
                "unet": dict(SD1_UNET_CONFIG), "vae": SD1_VAE, "text_encoder": CLIP_L_TEXT}
    raise ValueError(name)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: reset VmHWM to the current RSS
        return True
    except OSError:
        return False


def make_batch(module, size: int, resolution: int, cached: bool) -> dict:
    from interactdiffusion.conditioning import GroundingIds

    n, real = 30, 4
    g = torch.Generator().manual_seed(0)
    corner = torch.rand(size, n, 2, generator=g) * 0.5
    masks = torch.zeros(size, n)
    masks[:, :real] = 1
    ids = torch.full((3, size, n), -1, dtype=torch.long)
    ids[:, :, :real] = torch.randint(0, module.phrase_table.shape[0], (3, size, real), generator=g)
    batch = {
        "captions": ["a person is riding a horse, a person is holding a cup"] * size,
        "grounding": GroundingIds(torch.cat([corner, corner + 0.4], -1), torch.cat([corner.flip(-1), corner.flip(-1) + 0.3], -1),
                                  masks, ids[0], ids[1], ids[2]),
        "has_interaction": torch.ones(size, dtype=torch.bool),
        "scene_ids": [str(i) for i in range(size)],
    }
    images = torch.rand(size, 3, resolution, resolution, generator=g) * 2 - 1
    if cached:
        with torch.no_grad():
            dist = module.vae.encode(images).latent_dist
        batch["latent_mean"], batch["latent_std"] = dist.mean.half(), dist.std.half()  # the cache stores fp16
    else:
        batch["pixel_values"] = images
    return batch


def worker(backbone: str, cached: bool, batch_size: int, steps: int) -> dict:
    from interactdiffusion.training.module import InteractDiffusionModule

    torch.manual_seed(0)
    cfg = backbone_config(backbone)
    started = time.perf_counter()
    module = InteractDiffusionModule(cfg, {"grounding": {"kind": "interactdiffusion"}}, {"warmup_steps": 0})
    build_s = time.perf_counter() - started
    module.set_phrase_table(torch.randn(200, module.text_encoder.config.hidden_size))
    module.train()
    optimizer = module.configure_optimizers()["optimizer"]
    batch = make_batch(module, batch_size, int(cfg["resolution"]), cached)

    def step(i: int) -> None:
        loss, _ = module.compute_loss(batch, ("batch", i))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(0)  # warm-up (allocates the optimiser state)
    resident = _status_kib("VmRSS")
    exact_peak = _reset_peak_rss()
    times = []
    for i in range(1, steps + 1):
        t = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - t)
    peak = _status_kib("VmHWM")
    seconds = sorted(times)[len(times) // 2]
    return {
        "backbone": backbone,
        "input": "latent cache" if cached else "images",
        "build_s": build_s,
        "step_s": seconds,
        "samples_per_s": batch_size / seconds,
        "resident_gib": resident / 2**20,
        "step_peak_gib": max(0, peak - resident) / 2**20 if exact_peak else float("nan"),
        "peak_gib": peak / 2**20,
        "trainable": module.num_trainable,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["tiny", "sd1"], choices=["tiny", "sd1"])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--worker", nargs=2, metavar=("BACKBONE", "INPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1] == "cache", args.batch, args.steps)))
        return

    results = []
    for backbone in args.backbones:
        for mode in ("images", "cache"):
            cmd = [sys.executable, __file__, "--worker", backbone, mode, "--batch", str(args.batch), "--steps", str(args.steps)]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                sys.exit(f"{backbone}/{mode} failed:\n{out.stderr[-3000:]}")
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = results[-1]
            print(f"{r['backbone']:>5} {r['input']:>12}: {r['samples_per_s']:8.2f} samples/s  "
                  f"step {r['step_s']:7.2f} s  step peak {r['step_peak_gib'] * 1024:7.0f} MiB  "
                  f"process peak {r['peak_gib']:6.2f} GiB  (built in {r['build_s']:.1f} s)", flush=True)
    print(f"\nbatch {args.batch}, median of {args.steps} steps after one warm-up, torch threads {torch.get_num_threads()}")
    for backbone in args.backbones:
        img = next(r for r in results if r["backbone"] == backbone and r["input"] == "images")
        lat = next(r for r in results if r["backbone"] == backbone and r["input"] == "latent cache")
        memory = (f"step peak memory {lat['step_peak_gib'] / img['step_peak_gib']:.2f}x"
                  if img["step_peak_gib"] > 0.05 else "step peak memory too small to compare")
        print(f"{backbone}: latent cache / images: {lat['samples_per_s'] / img['samples_per_s']:.2f}x samples/s, "
              f"{memory} ({img['trainable']:,} trainable parameters)")
    if len(args.backbones) == 2:
        tiny = next(r for r in results if r["backbone"] == "tiny" and r["input"] == "images")
        sd1 = next(r for r in results if r["backbone"] == "sd1" and r["input"] == "images")
        print(f"sd1 / tiny (images): {sd1['step_s'] / tiny['step_s']:.0f}x seconds per step")


if __name__ == "__main__":
    main()
