"""What a generate/eval start pays to fingerprint its backbone folder: the first start vs the next ones.

Every resumable start records the sha256 of the backbone and weights (``resume.content_fingerprint``).
Hashing a multi-GB SD or SDXL folder takes tens of seconds to minutes; the persistent cache keyed by
each file's (path, size, mtime, ctime, inode) makes later starts only list the files.

The script builds a folder of ~4 GB (``--gigabytes``) of sparse files laid out like a backbone (no
disk space used, but every byte is read and hashed), then times ``content_fingerprint`` in a fresh
Python process twice against one empty cache folder: the first start hashes, the second reads the
cache. It prints both times and their ratio.

    python benchmarks/fingerprint.py                 # ~4 GB
    python benchmarks/fingerprint.py --gigabytes 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PARTS = {  # share of the total, as in an SD-1.x diffusers folder (fp32)
    "unet/diffusion_pytorch_model.safetensors": 0.66,
    "vae/diffusion_pytorch_model.safetensors": 0.06,
    "text_encoder/model.safetensors": 0.28,
}

TIMED = """
import json, sys, time
from interactdiffusion.resume import content_fingerprint
start = time.perf_counter()
digest = content_fingerprint(sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - start, "digest": digest}))
"""


def make_folder(root: Path, total_bytes: int) -> Path:
    for name, share in PARTS.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            fh.truncate(int(total_bytes * share))  # sparse: reads as zeros, takes no disk space
    for name in ("unet/config.json", "vae/config.json", "text_encoder/config.json", "scheduler/scheduler_config.json"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("{}\n")
    return root


def start(folder: Path, cache: Path) -> dict:
    env = {**os.environ, "INTERACTDIFFUSION_CACHE_DIR": str(cache)}
    done = subprocess.run([sys.executable, "-c", TIMED, str(folder)], env=env, capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=4.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_folder(Path(tmp) / "backbone", int(args.gigabytes * 2**30))
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        cache = Path(tmp) / "cache"
        first, second = start(folder, cache), start(folder, cache)
    assert first["digest"] == second["digest"]
    print(f"backbone folder: {size / 2**30:.2f} GiB in {len(PARTS) + 4} files (sparse)")
    print(f"first start  (hash every byte): {first['seconds']:8.3f} s")
    print(f"second start (persistent cache): {second['seconds']:8.3f} s")
    print(f"ratio first / second: {first['seconds'] / max(second['seconds'], 1e-9):,.0f}x")


if __name__ == "__main__":
    main()
