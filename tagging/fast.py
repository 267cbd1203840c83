"""Fast tag encoder: hashed word/bigram/char-trigram features -> TagModel, as a scorer.

A scorer is what `Tagger` needs from an encoder: ``kind``, ``num_tags``,
``logits(texts) -> (n, V) float32`` and ``save(directory) -> meta`` (+ ``load``).
This one is sub-millisecond per item on CPU and needs nothing but torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tagging.model import TagModel
from tagging.text import batch_features

WEIGHTS_FILE = "tagger.pt"


class FastScorer:
    kind = "fast"

    def __init__(self, model: TagModel, num_buckets: int, batch_size: int = 1024) -> None:
        self.model = model.eval()
        self.num_buckets = num_buckets
        self.batch_size = batch_size

    @property
    def num_tags(self) -> int:
        return self.model.num_tags

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.num_tags), np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                chunk = texts[start : start + self.batch_size]
                indices, offsets = batch_features(chunk, self.num_buckets)
                out[start : start + len(chunk)] = self.model(indices, offsets).numpy()
        return out

    def save(self, directory: Path) -> dict[str, Any]:
        torch.save(self.model.state_dict(), directory / WEIGHTS_FILE)
        return {
            "model": {
                "num_buckets": self.model.num_buckets,
                "embed_dim": self.model.embed_dim,
                "hidden_dim": self.model.hidden_dim,
                "num_tags": self.model.num_tags,
            },
            "num_buckets": self.num_buckets,
        }

    @classmethod
    def load(cls, directory: Path, meta: Mapping[str, Any]) -> FastScorer:
        model = TagModel(**meta["model"])
        state = torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        return cls(model, int(meta["num_buckets"]))
