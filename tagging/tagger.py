"""Inference wrapper: text in, (tag, confidence) lists out; save/load.

A Tagger is a scorer (the fast hashed n-gram model or the MiniLM head, see
`tagging.fast` / `tagging.minilm`), the tag vocabulary, and one decision threshold per
tag chosen on validation data (`tagging.calibration`). Confidences are the model's
sigmoid probabilities; a tag is returned when its confidence reaches its own threshold,
or a caller's explicit ``min_confidence`` instead.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from tagging.fast import FastScorer
from tagging.vocabulary import TagVocabulary

META_FILE = "tagger.json"
FORMAT_VERSION = 2  # 1: fast model only, one threshold
ENCODERS = ("fast", "minilm")


class TagScorer(Protocol):
    kind: str

    @property
    def num_tags(self) -> int: ...

    def logits(self, texts: Sequence[str]) -> np.ndarray: ...

    def save(self, directory: pathlib.Path) -> dict[str, Any]: ...


def _load_scorer(kind: str, directory: pathlib.Path, meta: Mapping[str, Any]) -> TagScorer:
    if kind == "fast":
        return FastScorer.load(directory, meta)
    if kind == "minilm":
        from tagging.minilm import MiniLMScorer  # imports sentence-transformers: only if used

        return MiniLMScorer.load(directory, meta)
    raise ValueError(f"unknown tag encoder {kind!r} (expected one of {ENCODERS})")


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return (0.5 * (1.0 + np.tanh(0.5 * logits))).astype(np.float32)  # overflow-free


class Tagger:
    """A trained scorer together with everything needed to use it."""

    def __init__(
        self,
        scorer: TagScorer,
        vocabulary: TagVocabulary,
        thresholds: np.ndarray | float,
        config: Mapping[str, Any] | None = None,
        global_threshold: float | None = None,
    ) -> None:
        if scorer.num_tags != len(vocabulary):
            raise ValueError("model output size does not match vocabulary")
        self.scorer = scorer
        self.vocabulary = vocabulary
        self.thresholds = np.broadcast_to(
            np.asarray(thresholds, np.float32), (len(vocabulary),)
        ).copy()
        if global_threshold is None:  # one threshold given: that one; else the typical one
            scalar = np.ndim(thresholds) == 0
            global_threshold = float(thresholds) if scalar else float(np.median(thresholds))
        self.threshold = float(global_threshold)  # the fallback for uncalibrated tags
        self.config = dict(config or {})

    @property
    def encoder(self) -> str:
        return self.scorer.kind

    @property
    def tag_names(self) -> list[str]:
        return self.vocabulary.names

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Sigmoid confidences, float32 (n, num_tags)."""
        return _sigmoid(self.scorer.logits(list(texts)))

    def cutoffs(self, min_confidence: float | None = None) -> np.ndarray:
        """Per-tag cut-off: the calibrated thresholds, or one explicit value for all."""
        if min_confidence is None:
            return self.thresholds
        return np.full(len(self.vocabulary), min_confidence, np.float32)

    def tags_from_proba(
        self, probs: np.ndarray, max_tags: int = 5, min_confidence: float | None = None
    ) -> list[list[tuple[str, float]]]:
        """Up to ``max_tags`` tags per row, confidence desc, each at or above its cut-off."""
        k = min(max(max_tags, 0), probs.shape[1])
        if k == 0:
            return [[] for _ in range(len(probs))]
        cut = self.cutoffs(min_confidence)
        # Stable sort so ties resolve by vocabulary order, deterministically.
        top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        names = self.vocabulary.names
        return [
            [(names[j], float(row[j])) for j in cols if row[j] >= cut[j]]
            for row, cols in zip(probs, top, strict=True)
        ]

    def predict(
        self,
        texts: Sequence[str],
        max_tags: int = 5,
        min_confidence: float | None = None,
    ) -> list[list[tuple[str, float]]]:
        """Up to ``max_tags`` tags per text, confidence desc, above the cut-off.

        ``min_confidence`` defaults to each tag's calibrated threshold.
        """
        return self.tags_from_proba(self.predict_proba(texts), max_tags, min_confidence)

    def save(self, directory: pathlib.Path) -> None:
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": FORMAT_VERSION,
            "encoder": self.encoder,
            "scorer": self.scorer.save(directory),
            "vocabulary": self.vocabulary.to_dict(),
            "thresholds": [round(float(t), 4) for t in self.thresholds],
            "threshold": self.threshold,
            "config": self.config,
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: pathlib.Path) -> Tagger:
        directory = pathlib.Path(directory)
        meta = json.loads((directory / META_FILE).read_text())
        version = meta.get("format_version")
        vocabulary = TagVocabulary.from_dict(meta["vocabulary"])
        if version == 1:  # artifacts written before encoders were pluggable
            scorer: TagScorer = FastScorer.load(directory, meta)
            threshold = float(meta["threshold"])
            return cls(scorer, vocabulary, threshold, meta.get("config"), threshold)
        if version != FORMAT_VERSION:
            raise ValueError(f"unsupported tagger format: {version}")
        scorer = _load_scorer(meta["encoder"], directory, meta["scorer"])
        return cls(
            scorer,
            vocabulary,
            np.asarray(meta["thresholds"], np.float32),
            meta.get("config"),
            meta.get("threshold"),
        )
