"""Text normalisation and hashed n-gram features for the fast tag encoder.

Features are hashed with CRC32 rather than Python's ``hash()`` because the
latter is salted per process, which would make a saved model meaningless
when loaded elsewhere.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from functools import lru_cache
from itertools import pairwise

import numpy as np
import torch

# Bucket 0 is reserved so that an empty text still yields a non-empty bag.
EMPTY_BUCKET = 0

_WHITESPACE_RE = re.compile(r"\s+")
# Letters/digits, allowing inner hyphens/apostrophes ("t-shirt", "men's").
_TOKEN_RE = re.compile(r"[^\W_]+(?:[-'][^\W_]+)*")

# Namespace prefixes keep e.g. the word "the" and the trigram "the" apart.
_UNIGRAM = b"w\x1f"
_BIGRAM = b"b\x1f"
_TRIGRAM = b"c\x1f"


def product_text(title: str, description: str, category: str) -> str:
    """Join product fields into one lowercased, whitespace-normalised string."""
    joined = " ".join(part for part in (title, description, category) if part)
    return _WHITESPACE_RE.sub(" ", joined.lower()).strip()


def tokenize(text: str) -> list[str]:
    return _TOKEN_RE.findall(text.lower())


def _bucket(namespace: bytes, feature: str, num_buckets: int) -> int:
    # Map into [1, num_buckets) so the reserved empty bucket is never hit.
    return 1 + zlib.crc32(namespace + feature.encode("utf-8")) % (num_buckets - 1)


@lru_cache(maxsize=1 << 18)
def _word_features(word: str, num_buckets: int) -> tuple[int, ...]:
    # Words repeat heavily across a catalogue, so caching the unigram +
    # trigram buckets per word removes most hashing work.
    feats = [_bucket(_UNIGRAM, word, num_buckets)]
    marked = f"<{word}>"
    feats.extend(_bucket(_TRIGRAM, marked[i : i + 3], num_buckets) for i in range(len(marked) - 2))
    return tuple(feats)


def hash_features(text: str, num_buckets: int) -> list[int]:
    """Hashed word unigrams, word bigrams and boundary-marked char trigrams.

    Returns ``[EMPTY_BUCKET]`` for a text without tokens.
    """
    if num_buckets < 2:
        raise ValueError("num_buckets must be >= 2 (bucket 0 is reserved)")
    words = tokenize(text)
    if not words:
        return [EMPTY_BUCKET]
    feats: list[int] = []
    for word in words:
        feats.extend(_word_features(word, num_buckets))
    feats.extend(_bucket(_BIGRAM, f"{a} {b}", num_buckets) for a, b in pairwise(words))
    return feats


def feature_arrays(texts: Sequence[str], num_buckets: int) -> list[np.ndarray]:
    """Per-text int64 feature arrays; lets training hash once, batch many times."""
    return [np.asarray(hash_features(t, num_buckets), dtype=np.int64) for t in texts]


def pack_bags(bags: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate per-item bags into EmbeddingBag (indices, offsets)."""
    if not bags:
        return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
    lengths = np.fromiter((len(b) for b in bags), dtype=np.int64, count=len(bags))
    offsets = np.zeros(len(bags), dtype=np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    return torch.from_numpy(np.concatenate(bags)), torch.from_numpy(offsets)


def batch_features(texts: Sequence[str], num_buckets: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(flat indices, offsets), both int64, ready for ``nn.EmbeddingBag``."""
    return pack_bags(feature_arrays(texts, num_buckets))
