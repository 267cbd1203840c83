"""A classical text-classification baseline for the tagger, and @k metrics shared with it.

TF-IDF over word unigrams and bigrams (the tagger's own tokenizer) feeding one binary
logistic regression per tag. It is the standard strong linear baseline for multi-label
product tagging, so the tagger has to beat more than the most-frequent-tags floor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from joblib import Parallel, delayed
from scipy.special import expit
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from tagging.calibration import THRESHOLD_GRID, calibrate_thresholds
from tagging.text import tokenize
from tagging.train import multilabel_prf
from tagging.vocabulary import TagVocabulary

AT_K = (1, 3)


def tag_metrics_at_k(proba: np.ndarray, true: np.ndarray, k: int) -> dict[str, float]:
    """Precision@k and recall@k of each item's k highest-scoring tags.

    For an item with true tag set T and top set P of the w = min(k, #tags) highest-scoring
    tags (ties by lower tag index): precision@k = |P & T| / w and recall@k = |P & T| / |T|,
    each averaged over the items with at least one true tag (recall is undefined without
    one, and precision is averaged over the same items so the pair is comparable). 0.0
    when no item has a true tag.
    """
    proba = np.asarray(proba, dtype=np.float64)
    true = np.asarray(true, dtype=bool)
    if proba.shape != true.shape:
        raise ValueError(f"shape mismatch: {proba.shape} vs {true.shape}")
    if k < 1:
        raise ValueError("k must be >= 1")
    names = (f"precision@{k}", f"recall@{k}")
    labelled = true.sum(axis=1) > 0
    width = min(k, proba.shape[1])
    if width == 0 or not labelled.any():
        return dict.fromkeys(names, 0.0)
    proba, true = proba[labelled], true[labelled]
    top = np.argsort(-proba, axis=1, kind="stable")[:, :width]
    hits = np.take_along_axis(true, top, axis=1).sum(axis=1)
    precision = float((hits / width).mean())
    recall = float((hits / true.sum(axis=1)).mean())
    return dict(zip(names, (precision, recall), strict=True))


def best_threshold(proba: np.ndarray, true: np.ndarray) -> float:
    """Grid threshold with the highest micro-F1 (the lowest one on ties)."""
    true = np.asarray(true, dtype=bool)
    best, best_f1 = float(THRESHOLD_GRID[0]), -1.0
    for threshold in THRESHOLD_GRID:
        f1 = multilabel_prf(proba >= threshold, true)["micro_f1"]
        if f1 > best_f1:
            best, best_f1 = float(threshold), f1
    return best


def _fit_tag(features: sp.csr_matrix, labels: np.ndarray, c: float, seed: int) -> np.ndarray:
    """Weights then bias of one tag's classifier, as one vector."""
    clf = LogisticRegression(C=c, solver="liblinear", random_state=seed)
    # liblinear's vector sums go through BLAS; one BLAS thread keeps their rounding, and so
    # the weights, identical whatever n_jobs is (joblib's workers get one thread each).
    with threadpool_limits(1, "blas"):
        clf.fit(features, labels)
    return np.append(clf.coef_[0], clf.intercept_[0])


@dataclass
class TfidfLogReg:
    """One-vs-rest logistic regression over TF-IDF features."""

    vectorizer: TfidfVectorizer
    weights: np.ndarray  # (features, tags)
    bias: np.ndarray  # (tags,)

    @classmethod
    def fit(
        cls, texts: list[str], targets: np.ndarray, c: float, seed: int, n_jobs: int
    ) -> TfidfLogReg:
        vectorizer = TfidfVectorizer(
            tokenizer=tokenize,
            token_pattern=None,
            lowercase=True,
            ngram_range=(1, 2),
            sublinear_tf=True,
            min_df=2,
        )
        features = vectorizer.fit_transform(texts).tocsr()
        # Workers get a read-only memory map of the matrix; liblinear would otherwise try to
        # sort its indices in place there and fail.
        features.sort_indices()
        num_tags = targets.shape[1]
        weights = np.zeros((features.shape[1], num_tags))
        # Constant columns cannot train a classifier: they score -inf/+inf, i.e. a tag with
        # no training positive is never predicted (and one on every item always is).
        positives = targets.sum(axis=0)
        bias = np.where(positives > 0, np.inf, -np.inf)
        trainable = np.flatnonzero((positives > 0) & (positives < targets.shape[0]))
        fitted = Parallel(n_jobs=n_jobs)(
            delayed(_fit_tag)(features, targets[:, j], c, seed) for j in trainable
        )
        for j, params in zip(trainable, fitted, strict=True):
            weights[:, j], bias[j] = params[:-1], params[-1]
        return cls(vectorizer, weights, bias)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        logits = self.vectorizer.transform(texts) @ self.weights + self.bias
        return expit(logits)  # what a binary LogisticRegression.predict_proba computes


def _holdout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    held = min(max(round(n * fraction), 1), n - 1)
    return np.sort(order[held:]), np.sort(order[:held])


def tfidf_logreg_baseline(
    train_texts: list[str],
    train_tags: list[list[str]],
    test_texts: list[str],
    test_tags: list[list[str]],
    vocabulary_names: list[str],
    threshold: float | None = None,
    seed: int = 0,
    c: float = 4.0,
    validation_fraction: float = 0.1,
    n_jobs: int = 2,
    min_calibration_positives: int = 10,
) -> dict[str, Any]:
    """Fit on train, score test over the given tag vocabulary (other tags are ignored).

    Without a ``threshold``, one is chosen on a seeded ``validation_fraction`` of train by
    micro-F1 (see ``best_threshold``) with a model fitted on the rest; the reported model is
    then refitted on all of train. ``train_seconds`` covers both fits. Returns
    ``multilabel_prf``'s micro precision/recall/F1 and macro F1 at the threshold, precision@k
    and recall@k for k in (1, 3) (``tag_metrics_at_k``), and bookkeeping counts. When the
    threshold was tuned, ``per_tag`` holds the same metrics at per-tag thresholds calibrated
    on that slice exactly as our tagger's are (``tagging.calibration``), so the table can
    tell the gain of calibration from the gain of the model.
    """
    if len(train_texts) != len(train_tags) or len(test_texts) != len(test_tags):
        raise ValueError("texts and tag lists must have the same length")
    vocab = TagVocabulary(vocabulary_names)
    train_y = vocab.encode(train_tags).astype(bool)
    test_y = vocab.encode(test_tags).astype(bool)
    started = time.perf_counter()
    per_tag = None
    if threshold is None:
        fit_idx, held_idx = _holdout(len(train_texts), validation_fraction, seed)
        model = TfidfLogReg.fit(
            [train_texts[i] for i in fit_idx], train_y[fit_idx], c, seed, n_jobs
        )
        held_proba = model.predict_proba([train_texts[i] for i in held_idx])
        threshold = best_threshold(held_proba, train_y[held_idx])
        per_tag = calibrate_thresholds(
            held_proba, train_y[held_idx], min_positives=min_calibration_positives
        ).thresholds
    model = TfidfLogReg.fit(train_texts, train_y, c, seed, n_jobs)
    train_seconds = time.perf_counter() - started

    proba = model.predict_proba(test_texts)
    at_k: dict[str, float] = {}
    for k in AT_K:
        at_k.update(tag_metrics_at_k(proba, test_y, k))
    metrics: dict[str, Any] = {**multilabel_prf(proba >= threshold, test_y), **at_k}
    if per_tag is not None:
        metrics["per_tag"] = {**multilabel_prf(proba >= per_tag, test_y), **at_k}
    metrics.update(
        threshold=float(threshold),
        num_tags=len(vocab),
        num_trained_tags=int(np.isfinite(model.bias).sum()),
        num_train=len(train_texts),
        num_test=len(test_texts),
        train_seconds=round(train_seconds, 3),
    )
    return metrics
