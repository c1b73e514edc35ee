"""HOI detector throughput on the CPU at the generated-image size (512², resized to 800² by the detectors).

FGAHOI-Swin-T and QPIC-R50 at their real sizes (random weights: speed does not depend on them), batch 1 vs
batch 4, in images/s; then our multi-scale deformable attention against the textbook formulation (sample every
level, stack, weight, sum) at identical inputs of FGAHOI-Swin-T's shapes. Prints measured ratios, asserts
nothing about time.

    python benchmarks/detector.py [--images 4] [--min-size 800] [--repeats 1] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from interactdiffusion.data.synthetic import full_scale_vocabulary
from interactdiffusion.evaluation.detectors.fgahoi import FGAHOI, FGAHOIConfig, FGAHOIDetector
from interactdiffusion.evaluation.detectors.fgahoi.deformable_attention import ms_deform_attn
from interactdiffusion.evaluation.detectors.qpic import QPIC, QPICConfig, QPICDetector


def reference_ms_deform_attn(value, spatial_shapes, sampling_locations, attention_weights):
    """The textbook form: one grid_sample per level, every level's samples stacked, then weighted and summed."""
    batch, _, heads, dim = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    grids = 2 * sampling_locations - 1
    per_level, start = [], 0
    for level, (h, w) in enumerate(spatial_shapes):
        v = value[:, start : start + h * w].flatten(2).transpose(1, 2).reshape(batch * heads, dim, h, w)
        start += h * w
        grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        per_level.append(F.grid_sample(v, grid, mode="bilinear", padding_mode="zeros", align_corners=False))
    weights = attention_weights.transpose(1, 2).reshape(batch * heads, 1, queries, levels * points)
    out = (torch.stack(per_level, dim=-2).flatten(-2) * weights).sum(-1).view(batch, heads * dim, queries)
    return out.transpose(1, 2)


def _time(fn, *args, repeats: int = 1) -> float:
    """Best of ``repeats`` (after a warm-up): the least disturbed by other jobs on a shared machine."""
    fn(*args)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - start)
    return best


def detector_throughput(detector, images, batch_size: int, repeats: int) -> float:
    detector.batch_size = batch_size
    sizes = [(512, 512)] * len(images)
    detector.detect(images[:batch_size], sizes[:batch_size])  # warm-up on one batch
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        detector.detect(images, sizes)
        best = min(best, time.perf_counter() - start)
    return len(images) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4, help="images per measurement (a multiple of 4)")
    parser.add_argument("--min-size", type=int, default=800, help="the detectors' resize (800 as evaluated)")
    parser.add_argument("--repeats", type=int, default=1, help="timed repeats per measurement (best kept)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vocab = full_scale_vocabulary()
    images = [torch.randint(0, 256, (3, 512, 512), dtype=torch.uint8) for _ in range(args.images)]
    print(f"CPU, {torch.get_num_threads()} threads, {args.images} images of 512², resized to {args.min_size}²")
    detectors = {
        "FGAHOI-Swin-T": FGAHOIDetector(FGAHOI(FGAHOIConfig()), vocab, device="cpu", min_size=args.min_size),
        "QPIC-R50": QPICDetector(QPIC(QPICConfig()), vocab, device="cpu", min_size=args.min_size),
    }
    speeds = {}
    for name, detector in detectors.items():
        one = detector_throughput(detector, images, 1, args.repeats)
        four = detector_throughput(detector, images, 4, args.repeats)
        speeds[name] = one
        print(f"{name:14s} batch 1: {one:6.3f} img/s   batch 4: {four:6.3f} img/s   batch 4 / batch 1: {four / one:.2f}x")
    print(f"FGAHOI-Swin-T / QPIC-R50 at batch 1: {speeds['FGAHOI-Swin-T'] / speeds['QPIC-R50']:.2f}x images/s")

    # deformable attention at FGAHOI-Swin-T's shapes (800² input: levels 100², 50², 25²), batch 4
    shapes = [(args.min_size // s, args.min_size // s) for s in (8, 16, 32)]
    tokens = sum(h * w for h, w in shapes)
    g = torch.Generator().manual_seed(0)
    for label, queries in (("decoder, 300 queries", 300), (f"encoder, {tokens} queries", tokens)):
        value = torch.randn(4, tokens, 8, 32, generator=g)
        locations = torch.rand(4, queries, 8, 3, 4, 2, generator=g)
        weights = torch.rand(4, queries, 8, 3, 4, generator=g).softmax(-1)
        with torch.no_grad():
            ours_out = ms_deform_attn(value, shapes, locations, weights)
            ref_out = reference_ms_deform_attn(value, shapes, locations, weights)
            diff = (ours_out - ref_out).abs().max().item()
            inputs = (value, shapes, locations, weights)
            t_ours = _time(ms_deform_attn, *inputs, repeats=3)
            t_ref = _time(reference_ms_deform_attn, *inputs, repeats=3)
        print(f"deformable attention ({label}): ours {t_ours * 1e3:8.1f} ms, textbook {t_ref * 1e3:8.1f} ms, "
              f"speed-up {t_ref / t_ours:.2f}x, max |diff| {diff:.1e}")


if __name__ == "__main__":
    main()
