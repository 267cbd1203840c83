"""Tag evaluation: both our encoders vs. TF-IDF + logistic regression on one held-out split.

Protocol: a seeded 80/20 split of the catalogue's items. Each of our taggers trains on the
80 % exactly as `recserve train` does (its own 10 % validation slice inside it picks the
per-tag thresholds), then is scored on the 20 % at the thresholds the service applies. The
baseline trains on the same 80 % (tuning its one threshold on its own slice) and is scored
on the same 20 %, over the same tag vocabulary.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from recdata.schema import Dataset
from tagging.tagger import ENCODERS
from tagging.text import product_text
from tagging.train import TaggerTrainConfig, multilabel_prf, train_tagger

Progress = Callable[[str], None]
TEST_FRACTION = 0.2
ROW_NAMES = {
    "fast": "ours: fast (hashed n-grams + MLP)",
    "minilm": "ours: minilm (frozen all-MiniLM-L6-v2 + MLP head)",
}
BASELINE_ROW = "baseline: tfidf + logistic regression"
BASELINE_PER_TAG_ROW = "baseline: tfidf + LR, per-tag thresholds"


def _texts(dataset: Dataset) -> list[str]:
    items = dataset.items
    return [
        product_text(t, d, c)
        for t, d, c in zip(items["title"], items["description"], items["category"], strict=True)
    ]


def evaluate_tags(
    dataset: Dataset,
    config: TaggerTrainConfig,
    seed: int = 0,
    progress: Progress = print,
    encoders: Sequence[str] = ENCODERS,
) -> dict[str, Any]:
    """Micro/macro P/R/F1 at the served thresholds and P/R@k, each encoder vs. the baseline."""
    from evaluation.tag_baseline import tag_metrics_at_k, tfidf_logreg_baseline

    if not encoders or any(e not in ENCODERS for e in encoders):
        raise ValueError(f"encoders must be a non-empty subset of {ENCODERS}")
    texts = _texts(dataset)
    tags = [list(t) for t in dataset.items["tags"]]
    order = np.random.default_rng(seed).permutation(len(texts))
    n_test = int(len(texts) * TEST_FRACTION)
    test_idx, train_idx = order[:n_test], order[n_test:]
    train_texts = [texts[i] for i in train_idx]
    train_tags = [tags[i] for i in train_idx]
    test_texts = [texts[i] for i in test_idx]
    test_tags = [tags[i] for i in test_idx]

    result: dict[str, Any] = {"items_train": len(train_idx), "items_test": len(test_idx)}
    vocabulary: list[str] = []
    for encoder in encoders:
        started = time.perf_counter()
        tagger, fit = train_tagger(
            train_texts,
            train_tags,
            replace(config, encoder=encoder, seed=seed),
            progress=progress,
        )
        train_seconds = time.perf_counter() - started
        vocabulary = tagger.tag_names  # the same for every encoder: same split, same rule
        true = tagger.vocabulary.encode(test_tags) > 0
        started = time.perf_counter()
        proba = tagger.predict_proba(test_texts)
        predict_seconds = time.perf_counter() - started
        row: dict[str, Any] = {
            **multilabel_prf(proba >= tagger.thresholds, true),
            **tag_metrics_at_k(proba, true, 1),
            **tag_metrics_at_k(proba, true, 3),
            "threshold": tagger.threshold,
            "calibrated_tags": fit["num_calibrated_tags"],
            "micro_f1_at_fixed_threshold": multilabel_prf(proba >= config.threshold, true)[
                "micro_f1"
            ],
            "train_seconds": round(train_seconds, 1),
            "predict_seconds": round(predict_seconds, 2),
        }
        result[ROW_NAMES[encoder]] = row
        progress(
            f"{encoder} tagger: micro-F1 {row['micro_f1']:.4f} at per-tag thresholds "
            f"({row['micro_f1_at_fixed_threshold']:.4f} at {config.threshold})"
        )
    baseline = tfidf_logreg_baseline(
        train_texts, train_tags, test_texts, test_tags, vocabulary, seed=seed
    )
    per_tag = baseline.pop("per_tag", None)
    progress(f"TF-IDF + LR: micro-F1 {baseline['micro_f1']:.4f}")
    result[BASELINE_ROW] = baseline
    if per_tag is not None:
        result[BASELINE_PER_TAG_ROW] = {**per_tag, "threshold": "per-tag"}
    result["tags"] = len(vocabulary)
    return result


COLUMNS = [
    "micro_precision",
    "micro_recall",
    "micro_f1",
    "macro_precision",
    "macro_recall",
    "macro_f1",
    "precision@1",
    "recall@1",
    "precision@3",
    "recall@3",
]


def _threshold_cell(metrics: dict[str, Any], num_tags: int) -> str:
    threshold = metrics.get("threshold", "–")
    if "calibrated_tags" in metrics:  # ours: per-tag, with the global fallback
        return f"per-tag ({metrics['calibrated_tags']}/{num_tags}; else {threshold:.2f})"
    return f"{threshold:.2f}" if isinstance(threshold, float) else str(threshold)


def tags_markdown(result: dict[str, Any]) -> str:
    lines = [
        "| tagger | " + " | ".join(COLUMNS) + " | threshold |",
        "|---|" + "---|" * (len(COLUMNS) + 1),
    ]
    for name, metrics in result.items():
        if isinstance(metrics, dict):
            cells = [f"{metrics[c]:.4f}" if c in metrics else "–" for c in COLUMNS]
            cells.append(_threshold_cell(metrics, result["tags"]))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append(
        f"\n{result['items_train']} training items, {result['items_test']} held-out "
        f"items, {result['tags']} tags."
    )
    return "\n".join(lines)
