"""Training for both tag encoders, threshold calibration, held-out metrics and a
most-frequent-tags baseline.

Both encoders share one protocol: a seeded train/validation split of the items, the
vocabulary from the training split, a model fitted on training items only, then per-tag
thresholds chosen on the validation items (`tagging.calibration`). The reported metrics are
on that same validation split, so they are slightly optimistic at the calibrated
thresholds; `recserve eval` measures on a separate held-out split.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from recdata.errors import TooLittleData
from tagging.calibration import calibrate_thresholds
from tagging.fast import FastScorer
from tagging.model import TagModel
from tagging.tagger import ENCODERS, Tagger, TagScorer
from tagging.text import feature_arrays, pack_bags
from tagging.vocabulary import TagVocabulary


@dataclass
class TaggerTrainConfig:
    # "fast": hashed n-grams -> EmbeddingBag -> MLP, trained end to end (sub-ms per item).
    # "minilm": frozen all-MiniLM-L6-v2 sentence embeddings -> trained MLP head.
    encoder: str = "fast"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-2  # Adam, MLP head
    embed_dim: int = 64
    hidden_dim: int = 256
    num_buckets: int = 1 << 18
    min_support: int = 5
    # The cut-off when calibration is off or the validation split has no positives.
    threshold: float = 0.4
    # Per-tag thresholds chosen on the validation split; a tag with fewer validation
    # positives than this keeps the global (micro-F1 best) threshold.
    calibrate: bool = True
    min_calibration_positives: int = 10
    seed: int = 0
    validation_fraction: float = 0.1
    # SparseAdam on the embedding table. Each row only sees the few batches
    # containing its feature, so it needs a much larger step than the head.
    embed_lr: float = 0.1
    # Features (buckets) seen in fewer training items are ignored; they can
    # only memorise individual items, never generalise.
    min_feature_count: int = 3
    dropout: float = 0.1
    # MiniLM head (trained on embeddings computed once; the encoder itself is frozen).
    minilm_max_tokens: int = 128
    head_hidden_dim: int = 1024
    head_epochs: int = 40
    head_lr: float = 1e-3
    head_batch_size: int = 64
    head_weight_decay: float = 1e-4
    head_dropout: float = 0.3


def multilabel_prf(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Micro and macro precision/recall/F1 for boolean (n, V) matrices.

    Macro F1 averages only over tags with any true or predicted positive:
    tags absent from both would otherwise contribute an undefined 0/0. Macro precision
    averages over tags that were predicted at least once, macro recall over tags that occur
    at least once. Undefined micro ratios are reported as 0.0.
    """
    pred = np.asarray(pred, dtype=bool)
    true = np.asarray(true, dtype=bool)
    if pred.shape != true.shape:
        raise ValueError(f"shape mismatch: {pred.shape} vs {true.shape}")
    tp = (pred & true).sum(axis=0).astype(np.float64)
    fp = (pred & ~true).sum(axis=0).astype(np.float64)
    fn = (~pred & true).sum(axis=0).astype(np.float64)
    tp_all, fp_all, fn_all = tp.sum(), fp.sum(), fn.sum()
    precision = tp_all / (tp_all + fp_all) if tp_all + fp_all else 0.0
    recall = tp_all / (tp_all + fn_all) if tp_all + fn_all else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    active = (tp + fp + fn) > 0
    per_tag = 2 * tp[active] / (2 * tp[active] + fp[active] + fn[active])
    macro = float(per_tag.mean()) if per_tag.size else 0.0
    predicted, present = (tp + fp) > 0, (tp + fn) > 0
    macro_p = float((tp[predicted] / (tp + fp)[predicted]).mean()) if predicted.any() else 0.0
    macro_r = float((tp[present] / (tp + fn)[present]).mean()) if present.any() else 0.0
    return {
        "micro_precision": float(precision),
        "micro_recall": float(recall),
        "micro_f1": float(f1),
        "macro_precision": macro_p,
        "macro_recall": macro_r,
        "macro_f1": macro,
    }


def most_frequent_baseline(train_targets: np.ndarray, num_items: int) -> np.ndarray:
    """Predict the top-m training tags for every item, m = round(mean tags/item)."""
    num_tags = train_targets.shape[1]
    pred = np.zeros((num_items, num_tags), dtype=bool)
    if train_targets.shape[0] == 0 or num_tags == 0:
        return pred
    m = min(round(float(train_targets.sum(axis=1).mean())), num_tags)
    freq = train_targets.sum(axis=0)
    top = np.argsort(-freq, kind="stable")[:m]
    pred[:, top] = True
    return pred


def _split(n: int, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(n)
    num_val = round(n * fraction) if n > 1 else 0
    num_val = min(max(num_val, 0), n - 1) if n else 0
    return order[num_val:], order[:num_val]


def _known_features(bags: list[np.ndarray], num_buckets: int, min_count: int) -> np.ndarray:
    """Boolean mask of buckets occurring in at least ``min_count`` items."""
    if not bags:
        return np.zeros(num_buckets, dtype=bool)
    item_counts = np.bincount(np.concatenate([np.unique(b) for b in bags]), minlength=num_buckets)
    return item_counts >= min_count


def _predict_bool(
    model: TagModel, bags: list[np.ndarray], threshold: float, batch_size: int = 1024
) -> np.ndarray:
    model.eval()
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(bags), batch_size):
            indices, offsets = pack_bags(bags[start : start + batch_size])
            chunks.append(torch.sigmoid(model(indices, offsets)).numpy() >= threshold)
    if not chunks:
        return np.zeros((0, model.num_tags), dtype=bool)
    return np.concatenate(chunks)


def _fit_fast(
    texts: list[str],
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    train_y: np.ndarray,
    val_true: np.ndarray,
    config: TaggerTrainConfig,
    rng: np.random.Generator,
    progress: Callable[[str], None] | None,
) -> FastScorer:
    bags = feature_arrays(texts, config.num_buckets)
    known = _known_features(
        [bags[i] for i in train_idx], config.num_buckets, config.min_feature_count
    )
    # Dropping unknown features up front matches what the model's masked mean
    # does at inference, and shrinks every training batch.
    train_bags = [bags[i][known[bags[i]]] for i in train_idx]
    val_bags = [bags[i] for i in val_idx]

    model = TagModel(
        config.num_buckets,
        config.embed_dim,
        config.hidden_dim,
        train_y.shape[1],
        dropout=config.dropout,
        sparse=True,
    )
    model.set_known_features(torch.from_numpy(known))
    # Sparse embedding gradients need SparseAdam; the dense head uses Adam.
    optimizers: Sequence[torch.optim.Optimizer] = (
        torch.optim.SparseAdam(list(model.embedding.parameters()), lr=config.embed_lr),
        torch.optim.Adam(model.head.parameters(), lr=config.lr),
    )
    # Linear decay to ~0 (as fastText does) settles the sparse rows instead of
    # letting late, large steps bounce validation F1 around between epochs.
    total_steps = config.epochs * -(-len(train_bags) // config.batch_size)
    schedulers = [
        torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: max(0.0, 1.0 - step / max(total_steps, 1))
        )
        for opt in optimizers
    ]
    loss_fn = nn.BCEWithLogitsLoss()
    train_y_t = torch.from_numpy(train_y)

    for epoch in range(1, config.epochs + 1):
        model.train()
        order = rng.permutation(len(train_bags))
        total, seen = 0.0, 0
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            indices, offsets = pack_bags([train_bags[i] for i in batch])
            loss = loss_fn(model(indices, offsets), train_y_t[batch])
            for opt in optimizers:
                opt.zero_grad()
            loss.backward()
            for opt, sched in zip(optimizers, schedulers, strict=True):
                opt.step()
                sched.step()
            total += loss.item() * len(batch)
            seen += len(batch)
        if progress is not None:
            val_pred = _predict_bool(model, val_bags, config.threshold)
            val_f1 = multilabel_prf(val_pred, val_true)["micro_f1"]
            progress(
                f"epoch {epoch}/{config.epochs} loss={total / max(seen, 1):.4f} "
                f"val_micro_f1={val_f1:.3f}"
            )

    model.embedding.sparse = False  # inference copies need no sparse grads
    return FastScorer(model.eval(), config.num_buckets)


def _fit_minilm(
    texts: list[str],
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    train_y: np.ndarray,
    val_true: np.ndarray,
    config: TaggerTrainConfig,
    rng: np.random.Generator,
    progress: Callable[[str], None] | None,
) -> TagScorer:
    from tagging.minilm import MiniLMScorer, TagHead, shared_encoder

    encoder = shared_encoder(config.minilm_max_tokens)
    started = time.perf_counter()
    unique = list(dict.fromkeys(texts))  # catalogues repeat titles; encode each text once
    memo = dict(zip(unique, encoder.encode(unique), strict=True))
    embeddings = np.stack([memo[t] for t in texts]) if texts else np.zeros((0, encoder.dim))
    if progress is not None:
        progress(f"encoded {len(unique)} texts with MiniLM in {time.perf_counter() - started:.1f}s")
    train_x = torch.from_numpy(embeddings[train_idx])
    val_x = torch.from_numpy(embeddings[val_idx])
    head = TagHead(encoder.dim, config.head_hidden_dim, train_y.shape[1], config.head_dropout)
    head.set_standardisation(train_x)
    optimizer = torch.optim.AdamW(
        head.parameters(), lr=config.head_lr, weight_decay=config.head_weight_decay
    )
    steps = config.head_epochs * -(-len(train_x) // config.head_batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(0.0, 1.0 - step / max(steps, 1))
    )
    loss_fn = nn.BCEWithLogitsLoss()
    train_y_t = torch.from_numpy(train_y)
    for epoch in range(1, config.head_epochs + 1):
        head.train()
        order = torch.from_numpy(rng.permutation(len(train_x)))
        total = 0.0
        for start in range(0, len(order), config.head_batch_size):
            batch = order[start : start + config.head_batch_size]
            loss = loss_fn(head(train_x[batch]), train_y_t[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(batch)
        if progress is not None and (epoch % 10 == 0 or epoch == config.head_epochs):
            head.eval()
            with torch.inference_mode():
                val_pred = torch.sigmoid(head(val_x)).numpy() >= config.threshold
            progress(
                f"head epoch {epoch}/{config.head_epochs} "
                f"loss={total / max(len(train_x), 1):.4f} "
                f"val_micro_f1={multilabel_prf(val_pred, val_true)['micro_f1']:.3f}"
            )
    return MiniLMScorer(encoder, head.eval(), memo=memo)


def train_tagger(
    texts: list[str],
    tag_lists: list[list[str]],
    config: TaggerTrainConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[Tagger, dict[str, Any]]:
    """Train the configured encoder on a seeded split, calibrate per-tag thresholds on
    the validation part, and report validation metrics vs. the baseline.

    The vocabulary is built from the training split only so validation tags
    never leak into the label space; validation tags outside it are ignored
    when scoring (neither model nor baseline can predict them).
    """
    config = config or TaggerTrainConfig()
    if config.encoder not in ENCODERS:
        raise ValueError(f"unknown tag encoder {config.encoder!r} (expected one of {ENCODERS})")
    if len(texts) != len(tag_lists):
        raise ValueError("texts and tag_lists must have the same length")
    started = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)

    train_idx, val_idx = _split(len(texts), config.validation_fraction, rng)
    vocab = TagVocabulary.build((tag_lists[i] for i in train_idx), config.min_support)
    if len(vocab) == 0:
        raise TooLittleData(
            f"no tag occurs on {config.min_support} or more training items "
            f"({len(train_idx)} items in the training split): tagging needs more products "
            "or a lower min_support"
        )
    train_y = vocab.encode(tag_lists[i] for i in train_idx)
    val_true = vocab.encode(tag_lists[i] for i in val_idx).astype(bool)

    fit = _fit_minilm if config.encoder == "minilm" else _fit_fast
    scorer = fit(texts, train_idx, val_idx, train_y, val_true, config, rng, progress)
    tagger = Tagger(scorer, vocab, config.threshold, dataclasses.asdict(config))
    val_proba = tagger.predict_proba([texts[i] for i in val_idx])
    fixed = multilabel_prf(val_proba >= config.threshold, val_true)
    if config.calibrate:
        calibration = calibrate_thresholds(
            val_proba,
            val_true,
            min_positives=config.min_calibration_positives,
            default=config.threshold,
        )
        tagger.thresholds = calibration.thresholds
        tagger.threshold = calibration.global_threshold
        num_calibrated = calibration.num_calibrated
    else:
        num_calibrated = 0

    metrics: dict[str, Any] = multilabel_prf(val_proba >= tagger.thresholds, val_true)
    baseline = multilabel_prf(most_frequent_baseline(train_y, len(val_idx)), val_true)
    metrics.update(
        encoder=config.encoder,
        baseline_micro_f1=baseline["micro_f1"],
        micro_f1_at_fixed_threshold=fixed["micro_f1"],
        num_tags=len(vocab),
        num_train=len(train_idx),
        num_validation=len(val_idx),
        threshold=tagger.threshold,
        num_calibrated_tags=num_calibrated,
        train_seconds=round(time.perf_counter() - started, 3),
    )
    return tagger, metrics
