"""Per-tag decision thresholds chosen on validation data.

One global cut-off treats a tag the model is sure about and a rare, hesitant one alike.
For each tag with enough validation positives we pick the grid threshold that maximises
that tag's F1; a tag with fewer positives gets the global threshold (the grid value with
the best micro-F1 over all tags), because an F1 optimum over two or three positives is
noise. Thresholds live in the artifact and are what the service applies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# > 0 so a tag never fires on every item; < 1 so a confident tag can still fire.
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.01), 2)


@dataclass(frozen=True)
class Calibration:
    thresholds: np.ndarray  # (V,) float32, the cut-off applied per tag
    global_threshold: float  # micro-F1 optimum; the fallback for sparse tags
    calibrated: np.ndarray  # (V,) bool, True where the tag got its own threshold

    @property
    def num_calibrated(self) -> int:
        return int(self.calibrated.sum())


def _counts(proba: np.ndarray, true: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, ...]:
    """tp, fp, fn per (grid threshold, tag): arrays of shape (len(grid), V)."""
    tp = np.empty((len(grid), proba.shape[1]), np.int64)
    predicted = np.empty_like(tp)
    for i, threshold in enumerate(grid):
        fired = proba >= threshold
        tp[i] = (fired & true).sum(axis=0)
        predicted[i] = fired.sum(axis=0)
    positives = true.sum(axis=0)
    return tp, predicted - tp, positives[None, :] - tp


def calibrate_thresholds(
    proba: np.ndarray,
    true: np.ndarray,
    *,
    min_positives: int = 10,
    default: float = 0.4,
    grid: np.ndarray = THRESHOLD_GRID,
) -> Calibration:
    """Thresholds for a (n, V) probability matrix against boolean labels.

    Ties go to the lowest threshold for the global choice (more recall at equal F1) and,
    per tag, to the threshold closest to the global one (the least surprising cut-off).
    With no validation rows at all every tag gets ``default``.
    """
    proba = np.asarray(proba, np.float32)
    true = np.asarray(true, bool)
    if proba.shape != true.shape:
        raise ValueError(f"shape mismatch: {proba.shape} vs {true.shape}")
    num_tags = proba.shape[1]
    if proba.shape[0] == 0 or not true.any():
        return Calibration(
            np.full(num_tags, default, np.float32), float(default), np.zeros(num_tags, bool)
        )
    tp, fp, fn = _counts(proba, true, grid)
    micro_denominator = 2 * tp.sum(axis=1) + fp.sum(axis=1) + fn.sum(axis=1)
    micro_f1 = 2 * tp.sum(axis=1) / np.maximum(micro_denominator, 1)
    best_global = int(np.argmax(micro_f1))  # argmax: first (lowest) threshold on ties
    global_threshold = float(grid[best_global])

    per_tag_f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    best = per_tag_f1.max(axis=0)
    # Among each tag's optimal grid points, the one nearest the global threshold.
    distance = np.abs(np.arange(len(grid)) - best_global)[:, None]
    ties = np.where(per_tag_f1 >= best[None, :] - 1e-12, distance, len(grid) + 1)
    chosen = grid[np.argmin(ties, axis=0)]
    calibrated = true.sum(axis=0) >= min_positives
    thresholds = np.where(calibrated, chosen, global_threshold).astype(np.float32)
    return Calibration(thresholds, global_threshold, calibrated)
