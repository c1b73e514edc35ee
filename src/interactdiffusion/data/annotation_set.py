"""``Annotations``: one split of one HICO-DET annotation file, parsed, with the counts to check it by.

``annotations.load_annotations`` builds it (from any format, or from its cache) and re-exports it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..vocab import HOIVocabulary
from .formats.common import train_counts_of
from .records import ImageRecord


@dataclass
class Annotations:
    """One split of one annotation file, parsed."""

    records: list[ImageRecord]
    vocab: HOIVocabulary
    split: str
    source: Path
    format: str
    skipped: dict[str, int] = field(default_factory=dict)
    from_cache: bool = False

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_pairs(self) -> int:
        return sum(len(r.pairs) for r in self.records)

    def non_empty(self) -> list[ImageRecord]:
        """Images with at least one visible pair (the ones layouts and training use)."""
        return [r for r in self.records if r.pairs]

    def stats(self) -> dict:
        """Counts a researcher checks against the paper (9,658 / 9,546 / 33,405 on the real test split)."""
        per_class = train_counts_of(self.records, self.vocab.num_classes)
        histogram = Counter(len(r.pairs) for r in self.records)
        out = {
            "source": str(self.source),
            "format": self.format,
            "split": self.split,
            "images": len(self.records),
            "non_empty_images": sum(1 for r in self.records if r.pairs),
            "pairs": int(per_class.sum()),
            "classes": self.vocab.num_classes,
            "classes_present": int((per_class > 0).sum()),
            "verbs": self.vocab.num_verbs,
            "objects": self.vocab.num_objects,
            "pairs_per_image": {str(k): histogram[k] for k in sorted(histogram)},
            "skipped": dict(self.skipped),
        }
        if self.vocab.train_counts is not None:
            rare = self.vocab.rare_mask()
            out.update(
                rare_classes=int(rare.sum()),
                non_rare_classes=int((~rare).sum()),
                rare_pairs=int(per_class[rare].sum()),
                non_rare_pairs=int(per_class[~rare].sum()),
            )
        return out

    def summary(self) -> str:
        """One line of counts plus everything skipped or repaired while parsing."""
        line = (
            f"{self.source} [{self.format}, {self.split}]: {len(self.records)} images "
            f"({sum(1 for r in self.records if r.pairs)} with visible pairs), {self.num_pairs} pairs"
        )
        if self.skipped:
            line += "; skipped/repaired: " + ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items()))
        return line
