"""Crash-safe outputs: the atomic helpers, the folder marker and the loaders that check it, the adapter
pair, one read of an official ``.pth``, and the persistent fingerprint cache."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import pytest
import torch

from interactdiffusion import atomic, resume
from interactdiffusion.atomic import (
    MARKER,
    IncompleteFolderError,
    check_folder,
    folder_atomic,
    write_text_atomic,
)

CRASH = atomic.CRASH_ENV


def _killed_python(code: str, crash_at: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter that SIGKILLs itself at ``crash_at``."""
    env = {**os.environ, CRASH: crash_at}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_a_file_is_old_or_new_never_half_even_when_killed(tmp_path):
    target = tmp_path / "results.json"
    write_text_atomic(target, "old\n")
    code = f"from interactdiffusion.atomic import write_text_atomic; write_text_atomic({str(target)!r}, 'new\\n')"
    killed = _killed_python(code, "before-publish:results.json")
    assert killed.returncode == -9, killed.stderr
    assert target.read_text() == "old\n"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "results.json"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".results.json.staging-")  # hidden, never the real name
    write_text_atomic(target, "new\n")  # the next write clears what the dead writer left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"] and target.read_text() == "new\n"


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "x.txt"
    write_text_atomic(target, "old")

    def broken(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic.write_file_atomic(target, broken)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_a_folder_is_published_whole_with_a_marker_that_loaders_check(tmp_path):
    target = tmp_path / "export"
    with folder_atomic(target) as staging:
        (staging / "a.bin").write_bytes(b"1234")
        (staging / "sub").mkdir()
        (staging / "sub" / "b.json").write_text("{}")
    assert check_folder(target) is True
    code = (
        "from interactdiffusion.atomic import folder_atomic\n"
        f"with folder_atomic({str(target)!r}) as s:\n"
        "    (s / 'a.bin').write_bytes(b'new weights')\n"
    )
    killed = _killed_python(code, "before-publish:export")
    assert killed.returncode == -9, killed.stderr
    assert (target / "a.bin").read_bytes() == b"1234" and (target / "sub" / "b.json").is_file()  # the old, whole
    with open(target / "a.bin", "r+b") as fh:
        fh.truncate(2)  # what an in-place copy cut short leaves
    with pytest.raises(IncompleteFolderError, match="a.bin has 2 bytes"):
        check_folder(target)
    (target / MARKER).unlink()
    assert check_folder(target) is False  # no marker: a folder from elsewhere, judged by its parts


def test_is_pipeline_folder_refuses_a_partial_or_damaged_folder(tiny_backbone, tmp_path):
    from interactdiffusion.pipeline import InteractDiffusionPipeline, is_pipeline_folder

    folder = tmp_path / "pipe"
    InteractDiffusionPipeline.from_backbone(tiny_backbone).save_pretrained(folder)
    assert is_pipeline_folder(folder) and check_folder(folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    with open(weights, "r+b") as fh:
        fh.truncate(100)
    with pytest.raises(IncompleteFolderError, match="diffusion_pytorch_model.safetensors"):
        is_pipeline_folder(folder)
    with pytest.raises(IncompleteFolderError):
        InteractDiffusionPipeline.from_pretrained(folder)
    # a folder written in place by an older version and cut short: no marker, no UNet weights
    (folder / MARKER).unlink()
    weights.unlink()
    assert not is_pipeline_folder(folder)


def test_the_adapter_export_loads_its_own_config_when_the_sidecar_is_from_another_export(tiny_backbone, tmp_path,
                                                                                          caplog):
    """A kill between the two files of an export leaves new weights beside an old sidecar: never paired."""
    from interactdiffusion.models import checkpoints

    base = tmp_path / "adapter"
    checkpoints.save_adapter(tiny_backbone.unet, base, config={"kind": "interactdiffusion", "max_interactions": 4})
    sidecar = base.with_suffix(".json")
    stale = sidecar.read_text().replace('"max_interactions": 4', '"max_interactions": 30')
    assert stale != sidecar.read_text()
    sidecar.write_text(stale)
    with caplog.at_level(logging.WARNING, logger=checkpoints.log.name):
        meta = checkpoints.export_config(base.with_suffix(".safetensors"))
    assert meta["grounding"]["max_interactions"] == 4
    assert "differs from the config inside" in caplog.text


def test_an_official_pth_is_read_once(tiny_backbone, tmp_path, monkeypatch):
    """The full checkpoint with its pickled OmegaConf config: one torch.load for the whole loader chain."""
    from test_checkpoints import official_config_dict, unet_to_ldm

    from interactdiffusion.models.backbone import build_tiny_backbone
    from interactdiffusion.models.unet import adapter_state_dict
    from interactdiffusion.pipeline import load_weights

    path = tmp_path / "interact-diffusion-v1.pth"
    state = {k: v + 0.01 for k, v in tiny_backbone.unet.state_dict().items()}
    torch.save({"model": unet_to_ldm(state, tiny_backbone.unet.config), "config_dict": official_config_dict()}, path)
    adapter_only = tmp_path / "ext_interactdiff_v1.pth"
    torch.save(unet_to_ldm(adapter_state_dict(tiny_backbone.unet), tiny_backbone.unet.config), adapter_only)

    calls = []
    real_load = torch.load

    def counting_load(*args, **kwargs):
        calls.append(args[0])
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    target = build_tiny_backbone(seed=3)
    assert "official full checkpoint" in load_weights(target, path)
    assert calls == [path]
    assert torch.equal(target.unet.state_dict()["conv_in.weight"], state["conv_in.weight"])
    calls.clear()
    assert "adapter from" in load_weights(target, adapter_only)
    assert calls == [adapter_only]


# -- the persistent fingerprint cache ---------------------------------------------------------------------
@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty on-disk cache; ``new_process()`` forgets the in-memory one, as a second start would."""
    monkeypatch.setenv("INTERACTDIFFUSION_CACHE_DIR", str(tmp_path / "cache"))
    hashed = []
    real = resume._hash_files

    def counting(files):
        hashed.append([name for name, _ in files])
        return real(files)

    monkeypatch.setattr(resume, "_hash_files", counting)
    resume._cached_digest.cache_clear()
    yield hashed
    resume._cached_digest.cache_clear()


def new_process():
    resume._cached_digest.cache_clear()


def test_a_second_start_reads_the_fingerprint_from_disk(tmp_path, fresh_cache):
    folder = tmp_path / "backbone"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "w.safetensors").write_bytes(b"w" * 1000)
    (folder / "vae.bin").write_bytes(b"v" * 10)
    first = resume.content_fingerprint(folder)
    assert len(fresh_cache) == 1 and (tmp_path / "cache" / resume.FINGERPRINT_CACHE_NAME).is_file()
    new_process()
    assert resume.content_fingerprint(folder) == first and len(fresh_cache) == 1  # nothing re-read


def test_an_edited_file_is_hashed_again(tmp_path, fresh_cache):
    """Same size and (restored) mtime, new bytes: the key still sees the edit; so does a replacement."""
    weights = tmp_path / "adapter.safetensors"
    weights.write_bytes(b"A" * 64)
    os.utime(weights, ns=(1_000_000_000, 1_000_000_000))
    first = resume.content_fingerprint(weights)
    stat = weights.stat()

    time.sleep(0.01)
    with open(weights, "r+b") as fh:  # in place: same inode, same size
        fh.write(b"B")
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # mtime put back by hand
    after = weights.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    new_process()
    edited = resume.content_fingerprint(weights)
    assert edited != first and len(fresh_cache) == 2  # ctime moved: hashed again

    replacement = tmp_path / "new.safetensors"
    replacement.write_bytes(b"C" * 64)
    os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(replacement, weights)  # re-published by rename: a new inode
    new_process()
    assert resume.content_fingerprint(weights) not in (first, edited) and len(fresh_cache) == 3
