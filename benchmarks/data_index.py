"""How fast the HICO-DET data layer starts and feeds training.

1. Annotation index at full HICO-DET scale (38,118 train / 9,658 test images, ~114k training pairs, 600
   classes), synthetic, in each of the three layouts: the first (cold) parse and the cached one.
   Target on the development machine: cold <= 10 s, cached <= 1 s.
2. Data-loader throughput at 512² with 2 workers: samples/s from JPEG images (decode + crop + resize)
   and from the latent cache (memory-mapped VAE posteriors), measured in the same run.

    python benchmarks/data_index.py [--formats mat,instances,qpic] [--images 256] [--skip-loader]

The full-scale files are generated once into .cache/benchmarks/ (writing the .mat takes minutes with
scipy) and reused. Times depend on the machine's load: the load average is printed alongside.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from interactdiffusion.data.annotations import load_annotations
from interactdiffusion.data.synthetic import full_scale_vocabulary, write_synthetic_hicodet

ROOT = Path(__file__).resolve().parents[1]
FULL = dict(num_train=38118, num_test=9658, image_size=((320, 640), (240, 640)), max_pairs=5, seed=0)


def full_scale_files(folder: Path):
    marker = folder / "complete"
    if not marker.is_file():
        print(f"generating full-scale synthetic annotations in {folder} (once; minutes) ...", flush=True)
        start = time.perf_counter()
        write_synthetic_hicodet(folder, vocab=full_scale_vocabulary(), write_images=False, **FULL)
        marker.write_text("ok")
        print(f"  generated in {time.perf_counter() - start:.0f} s", flush=True)
    return {
        "mat": folder / "anno_bbox.mat",
        "instances": folder / "instances_train2015.json",
        "qpic": folder / "annotations" / "trainval_hico.json",
    }


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def timed_cpu(fn):
    """Wall and CPU seconds: on a shared, loaded machine the CPU time is what an idle machine's wall time
    would be for this single-threaded work."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def bench_index(formats: list[str]) -> None:
    files = full_scale_files(ROOT / ".cache" / "benchmarks" / "hicodet-full")
    print(f"\n== annotation index, full scale (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print(f"{'format':<10} {'file MB':>8} {'cold s (cpu)':>14} {'cached s (cpu)':>15} {'images':>8} {'pairs':>8}")
    for fmt in formats:
        path = files[fmt]
        with tempfile.TemporaryDirectory() as cache:
            note = ""
            if fmt == "qpic":  # its class names and sizes come from a companion: parse that first, untimed
                load_annotations(files["mat"], "train", cache_dir=cache)
                note = "  (companion anno_bbox.mat already cached)"
            parse = functools.partial(load_annotations, path, "train", cache_dir=cache)
            cold, cold_cpu, first = timed_cpu(parse)
            cached, cached_cpu, second = timed_cpu(parse)
            assert not first.from_cache and second.from_cache and second.records == first.records
            size = path.stat().st_size / 1e6
            print(f"{fmt:<10} {size:>8.1f} {cold:>6.2f} ({cold_cpu:>5.2f}) {cached:>7.2f} ({cached_cpu:>5.2f}) "
                  f"{len(first.records):>8,} {first.num_pairs:>8,}{note}", flush=True)


def small_vae():
    """An SD-shaped VAE (4 levels: 512² → 4×64×64 latents) with few channels, so building the cache is quick;
    reading the cache costs the same as with the real VAE."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=[8, 8, 8, 8], down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=1, latent_channels=4, norm_num_groups=4,
    ).eval()


def loader_rate(datamodule, min_samples: int, warmup: int = 2) -> float:
    """Samples/s over whole passes of the training loader (workers persist between passes)."""
    loader = datamodule.train_dataloader()
    iterator = iter(loader)
    for _ in range(warmup):
        next(iterator)
    count, start = 0, time.perf_counter()
    while count < min_samples:
        for batch in iterator:
            count += len(batch["captions"])
        iterator = iter(loader)
    return count / (time.perf_counter() - start)


def bench_loader(num_images: int) -> None:
    from interactdiffusion.data.datamodule import HICODataModule

    folder = ROOT / ".cache" / "benchmarks" / f"hicodet-images-{num_images}"
    if not (folder / "complete").is_file():
        print(f"\nwriting {num_images} synthetic 500-640 x 375-480 JPEGs to {folder} ...", flush=True)
        write_synthetic_hicodet(folder, num_train=num_images, num_test=8, image_size=((500, 640), (375, 480)),
                                formats=("mat",))
        (folder / "complete").write_text("ok")
    cache = Path(tempfile.mkdtemp(prefix="bench-data-"))
    try:
        options = dict(train_annotations=folder / "anno_bbox.mat", train_image_dir=folder / "images" / "train2015",
                       test_image_dir=folder / "images" / "test2015", resolution=512, batch_size=8, num_workers=2,
                       cache_dir=cache)
        images = HICODataModule(**options)
        images.setup("fit")
        vae = small_vae()
        latents = HICODataModule(**options, latent_cache=True, vae=vae)
        build, _ = timed(latents.prepare_data)
        latents.setup("fit")
        torch.manual_seed(0)
        from_images = loader_rate(images, min_samples=2 * num_images)
        torch.manual_seed(0)
        from_latents = loader_rate(latents, min_samples=40 * num_images)
        print(f"\n== data loader, 512², batch 8, 2 workers, {num_images} images "
              f"(load average {os.getloadavg()[0]:.1f})")
        print(f"from images:       {from_images:8.1f} samples/s")
        print(f"from latent cache: {from_latents:8.1f} samples/s  ({from_latents / from_images:.1f}x; cache built in "
              f"{build:.0f} s with a small SD-shaped VAE, float16, 4x64x64 x 2 flips per image)")
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--formats", default="mat,instances,qpic")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--skip-loader", action="store_true")
    parser.add_argument("--skip-index", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    if not args.skip_index:
        bench_index([f for f in args.formats.split(",") if f])
    if not args.skip_loader:
        bench_loader(args.images)
    return 0


if __name__ == "__main__":
    sys.exit(main())
