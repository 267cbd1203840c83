"""Inference wrapper: text in, (tag, confidence) lists out; save/load."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from tagging.model import TagModel
from tagging.text import batch_features
from tagging.vocabulary import TagVocabulary

WEIGHTS_FILE = "tagger.pt"
META_FILE = "tagger.json"
FORMAT_VERSION = 1


class Tagger:
    """A trained TagModel together with everything needed to use it."""

    def __init__(
        self,
        model: TagModel,
        vocabulary: TagVocabulary,
        num_buckets: int,
        threshold: float,
        config: Mapping[str, Any] | None = None,
        batch_size: int = 1024,
    ) -> None:
        if model.num_tags != len(vocabulary):
            raise ValueError("model output size does not match vocabulary")
        self.model = model.eval()
        self.vocabulary = vocabulary
        self.num_buckets = num_buckets
        self.threshold = float(threshold)
        self.config = dict(config or {})
        self.batch_size = batch_size

    @property
    def tag_names(self) -> list[str]:
        return self.vocabulary.names

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Sigmoid confidences, float32 (n, num_tags)."""
        out = np.zeros((len(texts), len(self.vocabulary)), dtype=np.float32)
        self.model.eval()
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                chunk = texts[start : start + self.batch_size]
                indices, offsets = batch_features(chunk, self.num_buckets)
                probs = torch.sigmoid(self.model(indices, offsets))
                out[start : start + len(chunk)] = probs.numpy()
        return out

    def predict(
        self,
        texts: Sequence[str],
        max_tags: int = 5,
        min_confidence: float | None = None,
    ) -> list[list[tuple[str, float]]]:
        """Up to ``max_tags`` tags per text, confidence desc, above the cut-off.

        ``min_confidence`` defaults to the threshold chosen at training time.
        """
        cutoff = self.threshold if min_confidence is None else min_confidence
        probs = self.predict_proba(texts)
        k = min(max(max_tags, 0), probs.shape[1])
        if k == 0:
            return [[] for _ in texts]
        # Stable sort so ties resolve by vocabulary order, deterministically.
        top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        names = self.vocabulary.names
        return [
            [(names[j], float(row[j])) for j in cols if row[j] >= cutoff]
            for row, cols in zip(probs, top, strict=True)
        ]

    def save(self, directory: pathlib.Path) -> None:
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), directory / WEIGHTS_FILE)
        meta = {
            "format_version": FORMAT_VERSION,
            "vocabulary": self.vocabulary.to_dict(),
            "model": {
                "num_buckets": self.model.num_buckets,
                "embed_dim": self.model.embed_dim,
                "hidden_dim": self.model.hidden_dim,
                "num_tags": self.model.num_tags,
            },
            "num_buckets": self.num_buckets,
            "threshold": self.threshold,
            "config": self.config,
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: pathlib.Path) -> Tagger:
        directory = pathlib.Path(directory)
        meta = json.loads((directory / META_FILE).read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported tagger format: {meta.get('format_version')}")
        model = TagModel(**meta["model"])
        state = torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        return cls(
            model=model,
            vocabulary=TagVocabulary.from_dict(meta["vocabulary"]),
            num_buckets=meta["num_buckets"],
            threshold=meta["threshold"],
            config=meta.get("config"),
        )
