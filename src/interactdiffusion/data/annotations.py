"""Load HICO-DET annotations from any of the three layouts into the same records, with a cache.

``load_annotations(path, split=None, vocabulary=None)`` detects the format (``anno_bbox.mat``,
PPDM/QPIC ``trainval_hico.json``/``test_hico.json``, fredzzhang ``instances_{train,test}2015.json``),
parses it once into ``ImageRecord``s (continuous 0-based xyxy boxes, see ``boxes.py``) and caches the
result as a pickle-free ``.npz`` keyed by the source file's size, mtime and ``FORMAT_VERSION`` (plus
those of any companion file that supplied the vocabulary or image sizes), so a second start is fast.

The vocabulary (class list, "-ing" forms, training counts for the rare split) comes from the user's
files: ``list_action`` and ``bbox_train`` of ``anno_bbox.mat``; the class tables of an instances json
(with its training file, or its ``rare`` list, for rarity); for the QPIC json, which has neither names
nor sizes, from ``vocabulary=`` (an ``anno_bbox.mat``, an instances json, a saved
``HOIVocabulary`` json, or a ``HOIVocabulary``) or from such a file found next to it.
``Annotations`` itself lives in ``annotation_set`` and is re-exported here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import write_file_atomic
from ..vocab import RARE_THRESHOLD, HOIVocabulary
from .annotation_set import Annotations
from .formats.common import AnnotationError, UnknownFormatError, with_counts
from .formats.instances import is_instances, rare_counts, read_instances_json, vocabulary_from_instances
from .formats.mat import read_anno_bbox_mat
from .formats.qpic import is_qpic, read_qpic_json
from .records import ImageRecord, PairRecord

log = logging.getLogger(__name__)

# Bump whenever parsing changes what a record holds: old caches are then ignored.
# 2: HICO-DET's own "-ing" spellings from every format; a test json's own rare list.
FORMAT_VERSION = 2
FORMATS = ("mat", "qpic", "instances")
SPLITS = ("train", "test")
VOCABULARY_FILE = "hoi_vocabulary.json"

__all__ = [
    "Annotations",
    "AnnotationError",
    "UnknownFormatError",
    "detect_format",
    "load_annotations",
    "load_vocabulary",
]


# -- detection ------------------------------------------------------------------------------------
def detect_format(path: str | Path) -> str:
    """'mat', 'qpic' or 'instances' from the file's first bytes (json is confirmed when parsed)."""
    path = Path(path)
    with path.open("rb") as fh:
        head = fh.read(4096)
    if head.startswith(b"MATLAB"):
        return "mat"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"["):
        return "qpic"
    if text.startswith(b"{"):
        return "instances"
    if path.suffix.lower() == ".mat" and head[:4] == b"\x89HDF":
        raise UnknownFormatError(path, "a MATLAB v7.3 (HDF5) file; save it with -v7 or earlier")
    raise UnknownFormatError(path, "neither a MATLAB v5 file nor json")


def _load_json(path: Path):
    try:
        with path.open("rb") as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UnknownFormatError(path, f"invalid json: {err}") from None


def _split_from_name(path: Path, split: str | None) -> str:
    if split is not None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return split
    return "test" if "test" in path.name.lower() else "train"


# -- cache ----------------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    root = os.environ.get("INTERACTDIFFUSION_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "interactdiffusion") / "annotations"


def _identity(path: Path) -> list:
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


def _cache_file(cache_dir: Path, parts: list) -> Path:
    digest = hashlib.sha1(json.dumps([FORMAT_VERSION, *parts], sort_keys=True, default=str).encode()).hexdigest()
    return cache_dir / f"annotations-{digest[:20]}.npz"


def _save_cache(file: Path, annotations: Annotations) -> None:
    records = annotations.records
    offsets = np.zeros(len(records) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(r.pairs) for r in records])
    pairs = [p for r in records for p in r.pairs]
    boxes = np.array([p.human_box + p.object_box for p in pairs], dtype=np.float64).reshape(-1, 8)
    ids = np.array([(p.hoi, p.verb, p.object) for p in pairs], dtype=np.int64).reshape(-1, 3)
    meta = {
        "version": FORMAT_VERSION,
        "vocab": annotations.vocab.to_dict(),
        "split": annotations.split,
        "source": str(annotations.source),
        "format": annotations.format,
        "skipped": annotations.skipped,
    }
    def write(tmp: Path) -> None:
        with tmp.open("wb") as fh:
            np.savez(
                fh,
                file_names=np.array([r.file_name for r in records], dtype=str),
                sizes=np.array([(r.width, r.height) for r in records], dtype=np.int64).reshape(-1, 2),
                offsets=offsets,
                boxes=boxes,
                ids=ids,
                meta=np.array(json.dumps(meta)),
            )

    write_file_atomic(file, write)


def _load_cache(file: Path) -> Annotations | None:
    try:
        with np.load(file, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("version") != FORMAT_VERSION:
                return None
            names = data["file_names"].tolist()
            sizes = data["sizes"]
            offsets = data["offsets"].tolist()
            boxes = data["boxes"]
            ids = data["ids"]
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as err:
        log.warning("ignoring unreadable annotation cache %s (%s)", file, err)
        return None
    columns = [boxes[:, k].tolist() for k in range(8)]
    pairs = list(map(PairRecord, zip(*columns[:4]), zip(*columns[4:]), *(ids[:, k].tolist() for k in range(3))))
    slices = (pairs[a:b] for a, b in zip(offsets[:-1], offsets[1:]))
    records = list(map(ImageRecord, names, sizes[:, 0].tolist(), sizes[:, 1].tolist(), slices))
    return Annotations(
        records=records,
        vocab=HOIVocabulary.from_dict(meta["vocab"]),
        split=meta["split"],
        source=Path(meta["source"]),
        format=meta["format"],
        skipped=meta["skipped"],
        from_cache=True,
    )


# -- companions: where the QPIC json's vocabulary and image sizes come from -------------------------
@dataclass
class _Companion:
    path: Path | None
    vocab: HOIVocabulary
    sizes: dict[str, tuple[int, int]] | None = None


def _candidate_companions(path: Path, split: str) -> list[Path]:
    other = "test" if split == "train" else "train"
    names = [VOCABULARY_FILE, "anno_bbox.mat", f"instances_{split}2015.json", f"instances_{other}2015.json"]
    found = []
    for folder in (path.parent, path.parent.parent):
        for name in names:
            candidate = folder / name
            if candidate.is_file() and candidate.resolve() != path.resolve() and candidate not in found:
                found.append(candidate)
    return found


def _vocabulary_identity(vocabulary) -> list:
    if vocabulary is None:
        return [None]
    if isinstance(vocabulary, HOIVocabulary):
        return ["object", hashlib.sha1(json.dumps(vocabulary.to_dict()).encode()).hexdigest()]
    return _identity(Path(vocabulary))


def _companion(source: Path, cache_dir: Path | None) -> _Companion:
    """Vocabulary (with training counts when it can know them) and image sizes from one file."""
    fmt = detect_format(source)
    if fmt == "mat":
        train = load_annotations(source, "train", cache_dir=cache_dir)
        test = load_annotations(source, "test", cache_dir=cache_dir)
        sizes = {r.file_name: (r.width, r.height) for r in train.records + test.records}
        return _Companion(source, train.vocab, sizes)
    data = _load_json(source)
    if isinstance(data, dict) and {"objects", "verbs", "verb_ing", "classes"} <= set(data):
        return _Companion(source, HOIVocabulary.from_dict(data))
    if is_instances(data):
        loaded = load_annotations(source, cache_dir=cache_dir)
        return _Companion(source, loaded.vocab, {r.file_name: (r.width, r.height) for r in loaded.records})
    raise UnknownFormatError(source, "given as vocabulary, but it is no anno_bbox.mat, instances json or saved vocabulary")


def load_vocabulary(source: str | Path | HOIVocabulary, cache_dir: str | Path | None = None) -> HOIVocabulary:
    """A vocabulary from anno_bbox.mat, an instances json or a saved ``HOIVocabulary`` json."""
    return _companion_of(source, _resolve_cache_dir(cache_dir)).vocab


def _header_sizes(image_dir: Path):
    from PIL import Image, UnidentifiedImageError

    def size(file_name: str) -> tuple[int, int] | None:
        try:
            with Image.open(image_dir / file_name) as image:
                return image.size
        except (OSError, UnidentifiedImageError):
            return None

    return size


def _default_image_dir(path: Path, split: str) -> Path | None:
    for folder in (path.parent.parent, path.parent):
        candidate = folder / "images" / f"{split}2015"
        if candidate.is_dir():
            return candidate
    return None


# -- parsing --------------------------------------------------------------------------------------
def _parse_mat(path: Path, split: str, cache_dir: Path | None, key_for) -> Annotations:
    vocab, splits = read_anno_bbox_mat(path)
    result = None
    for name, (records, skipped) in splits.items():
        loaded = Annotations(records, vocab, name, path, "mat", dict(skipped))
        if cache_dir is not None:
            _save_cache(key_for(name), loaded)
        if name == split:
            result = loaded
    return result


def _parse_instances(path: Path, data, split: str, vocabulary, cache_dir: Path | None) -> Annotations:
    official, official_source = None, None
    if vocabulary is not None:
        official = _companion_of(vocabulary, cache_dir).vocab
        official_source = vocabulary if not isinstance(vocabulary, HOIVocabulary) else "the given vocabulary"
    else:
        for candidate in _candidate_companions(path, split):
            if candidate.name in (VOCABULARY_FILE, "anno_bbox.mat"):
                try:
                    official = _companion(candidate, cache_dir).vocab
                    vocabulary_from_instances(data, str(path), official)
                except (AnnotationError, OSError) as err:
                    log.warning("not using %s for the -ing forms of %s: %s", candidate, path, err)
                    official = None
                    continue
                official_source = candidate
                log.info("%s: class names and training counts from %s", path, candidate)
                break
    vocab = vocabulary_from_instances(data, str(path), official)
    records, skipped, listed = read_instances_json(path, data, vocab)
    counts = listed if split == "train" else _test_split_counts(path, data, vocab, official, official_source, cache_dir)
    return Annotations(records, with_counts(vocab, counts), split, path, "instances", dict(skipped))


def _test_split_counts(path: Path, data, vocab: HOIVocabulary, official, official_source, cache_dir):
    """Training counts for the rare split of a test instances json. The file's own ``rare`` list wins over
    a neighbouring file's counts that disagree with it (said in a warning); every companion read is logged."""
    companion, source = None, None
    if official is not None and official.train_counts is not None:
        companion, source = official.train_counts, official_source
    else:
        train_file = path.with_name(path.name.replace("test", "train"))
        if train_file != path and train_file.is_file():
            companion, source = load_annotations(train_file, "train", cache_dir=cache_dir).vocab.train_counts, train_file
    own = rare_counts(data, vocab.num_classes)
    if own is not None and companion is not None and not np.array_equal(own < RARE_THRESHOLD, companion < RARE_THRESHOLD):
        differ = int(((own < RARE_THRESHOLD) != (companion < RARE_THRESHOLD)).sum())
        log.warning("%s: its rare list disagrees with the training counts of %s on %d classes (%d vs %d rare): "
                    "using the file's own list", path, source, differ, int((own < RARE_THRESHOLD).sum()),
                    int((companion < RARE_THRESHOLD).sum()))
        return own
    if companion is not None:
        log.info("%s: rare split from the training counts of %s", path, source)
        return companion
    if own is not None:
        log.info("%s: rare split taken from the file's rare list (no training annotations to count)", path)
    return own


def _companion_of(vocabulary, cache_dir: Path | None) -> _Companion:
    if isinstance(vocabulary, HOIVocabulary):
        return _Companion(None, vocabulary)
    return _companion(Path(vocabulary), cache_dir)


def _parse_qpic(path: Path, data, split: str, vocabulary, image_dir, cache_dir: Path | None) -> Annotations:
    companions: list[_Companion] = []
    if vocabulary is not None:
        companions.append(_companion_of(vocabulary, cache_dir))
    for candidate in _candidate_companions(path, split):
        if companions and any(c.sizes for c in companions):
            break  # a vocabulary and image sizes: nothing more to look for
        try:
            companions.append(_companion(candidate, cache_dir))
        except (AnnotationError, OSError) as err:
            log.warning("ignoring %s next to %s: %s", candidate, path, err)
    if not companions:
        raise AnnotationError(
            f"{path}: a PPDM/QPIC file has no class names; pass vocabulary= (anno_bbox.mat, an instances json or a "
            f"saved vocabulary json) or put one of {VOCABULARY_FILE}, anno_bbox.mat, instances_{split}2015.json next to it"
        )
    vocab = companions[0].vocab
    sizes: dict[str, tuple[int, int]] = {}
    for companion in reversed(companions):
        if companion.sizes:
            same = [(companion.vocab.objects[c.object], companion.vocab.verbs[c.verb]) for c in companion.vocab.classes]
            mine = [(vocab.objects[c.object], vocab.verbs[c.verb]) for c in vocab.classes]
            if same == mine:
                sizes.update(companion.sizes)
    folder = Path(image_dir) if image_dir is not None else _default_image_dir(path, split)
    header = _header_sizes(folder) if folder is not None else (lambda name: None)

    def image_size(file_name: str):
        return sizes.get(file_name) or header(file_name)

    records, skipped, listed = read_qpic_json(path, data, vocab, image_size)
    counts = listed if split == "train" else vocab.train_counts
    return Annotations(records, with_counts(vocab, counts), split, path, "qpic", dict(skipped))


def _resolve_cache_dir(cache_dir) -> Path | None:
    if cache_dir is False:
        return None
    return Path(cache_dir) if cache_dir else default_cache_dir()


def load_annotations(
    path: str | Path,
    split: str | None = None,
    vocabulary: str | Path | HOIVocabulary | None = None,
    *,
    image_dir: str | Path | None = None,
    cache_dir: str | Path | bool | None = None,
) -> Annotations:
    """Parse one split of a HICO-DET annotation file (any accepted format), cached.

    ``split``: "train" or "test"; by default "train" for ``anno_bbox.mat`` (which holds both) and, for the
    json layouts, "test" when the file name contains "test". ``vocabulary``: where the QPIC json's class
    names come from (see the module docstring); for an instances json it supplies the official "-ing"
    forms; ``anno_bbox.mat`` always uses its own ``list_action``. ``image_dir``: images whose headers give
    the sizes a QPIC file lacks. ``cache_dir``: where parsed files are cached (default
    ``$INTERACTDIFFUSION_CACHE_DIR/annotations`` or ``~/.cache/interactdiffusion/annotations``);
    ``False`` disables the cache.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    cache = _resolve_cache_dir(cache_dir)
    fmt = detect_format(path)
    split = _split_from_name(path, split) if fmt != "mat" or split is not None else "train"

    def key_for(name: str) -> Path:
        parts = [_identity(path), name, _vocabulary_identity(vocabulary) if fmt != "mat" else None]
        if fmt != "mat":
            parts += [str(image_dir)] + [_identity(c) for c in _candidate_companions(path, name)]
        return _cache_file(cache, parts)

    if cache is not None:
        file = key_for(split)
        if file.is_file():
            cached = _load_cache(file)
            if cached is not None:
                cached.source = path
                return cached

    if fmt == "mat":
        if vocabulary is not None:
            log.info("%s: anno_bbox.mat has its own class list; vocabulary=%s is not used", path, vocabulary)
        return _parse_mat(path, split, cache, key_for)
    data = _load_json(path)
    if fmt == "qpic":
        if not is_qpic(data):
            raise UnknownFormatError(path, "a json list whose items lack file_name/hoi_annotation")
        result = _parse_qpic(path, data, split, vocabulary, image_dir, cache)
    else:
        if not is_instances(data):
            keys = sorted(data)[:8] if isinstance(data, dict) else type(data).__name__
            raise UnknownFormatError(path, f"a json object without annotation/filenames (keys {keys})")
        result = _parse_instances(path, data, split, vocabulary, cache)
    if cache is not None:
        _save_cache(key_for(split), result)
    return result
