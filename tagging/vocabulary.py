"""Tag vocabulary: normalisation, support filtering and multi-hot encoding."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

_SEPARATOR_RE = re.compile(r"[\s_]+")


def normalize_tag(tag: str) -> str:
    """Lowercase, strip, and collapse whitespace/underscores to '-'."""
    return _SEPARATOR_RE.sub("-", tag.strip().lower()).strip("-")


class TagVocabulary:
    """Ordered set of normalised tag names; index order is the model's output order."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names: list[str] = list(names)
        self._index = {name: i for i, name in enumerate(self.names)}
        if len(self._index) != len(self.names):
            raise ValueError("duplicate tag names in vocabulary")

    @classmethod
    def build(cls, tag_lists: Iterable[list[str]], min_support: int = 5) -> TagVocabulary:
        """Keep tags occurring in at least ``min_support`` items.

        Support counts items, not mentions, so a tag repeated within one
        item's list counts once. Order: support desc, then name, which keeps
        the vocabulary deterministic for a given corpus.
        """
        support: Counter[str] = Counter()
        for tags in tag_lists:
            support.update({t for t in map(normalize_tag, tags) if t})
        kept = [name for name, count in support.items() if count >= min_support]
        kept.sort(key=lambda name: (-support[name], name))
        return cls(kept)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and normalize_tag(name) in self._index

    def index(self, name: str) -> int:
        """Index of a tag (normalised first); raises KeyError if unknown."""
        return self._index[normalize_tag(name)]

    def encode(self, tag_lists: Iterable[list[str]]) -> np.ndarray:
        """Multi-hot float32 matrix (n, V); unknown tags are ignored."""
        rows = list(tag_lists)
        out = np.zeros((len(rows), len(self.names)), dtype=np.float32)
        for row, tags in enumerate(rows):
            for tag in tags:
                col = self._index.get(normalize_tag(tag))
                if col is not None:
                    out[row, col] = 1.0
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TagVocabulary:
        return cls(data["names"])

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, data: str | Mapping[str, Any]) -> TagVocabulary:
        """Accepts the string from ``to_json`` or an already-parsed mapping."""
        return cls.from_dict(json.loads(data) if isinstance(data, str) else data)
