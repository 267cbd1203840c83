"""Precomputed tags of catalogue items, served from memory by GetItemTags.

`CatalogTags` is an immutable table (sorted item ids, each item's top tags and their
confidences). `LiveCatalogTags` wraps one for serving and takes items added to (or removed
from) the catalogue after training: their tags are generated once by the caller and cached
here. It is copy-on-write: a reader takes one immutable snapshot (the trained table, a
small overlay of upserted items, the deleted ids) and answers from it, while a writer,
serialised by a lock, builds a new snapshot and publishes it with a single assignment. So
concurrent readers never see a half-applied change and never block on a writer.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CATALOG_FILE = "catalog_tags.npz"
STORED_TAGS = 8

TagPairs = list[tuple[str, float]]


def _top_tags(
    probabilities: np.ndarray, thresholds: float | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's top STORED_TAGS tags at or above their (per-tag) threshold."""
    probabilities = np.asarray(probabilities, np.float32)
    n, num_tags = probabilities.shape
    cut = np.broadcast_to(np.asarray(thresholds, np.float32), (num_tags,))
    k = min(STORED_TAGS, num_tags)
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    conf = np.take_along_axis(probabilities, top, axis=1)
    keep = conf >= cut[top]
    # Tags under their threshold drop out; the kept ones stay in confidence order.
    order = np.argsort(~keep, axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    conf = np.take_along_axis(conf, order, axis=1)
    keep = np.take_along_axis(keep, order, axis=1)
    tag_index = np.full((n, STORED_TAGS), -1, np.int32)
    confidence = np.zeros((n, STORED_TAGS), np.float32)
    tag_index[:, :k] = np.where(keep, top, -1)
    confidence[:, :k] = np.where(keep, conf, 0.0)
    return tag_index, confidence


class CatalogTags:
    def __init__(
        self,
        item_ids: np.ndarray,
        tag_index: np.ndarray,
        confidence: np.ndarray,
        tag_names: list[str],
    ) -> None:
        order = np.argsort(item_ids, kind="stable")
        self.item_ids = np.asarray(item_ids, np.int64)[order]
        self.tag_index = tag_index[order]  # (N, STORED_TAGS) int32, -1 = none
        self.confidence = confidence[order]  # (N, STORED_TAGS) float32, descending
        self.tag_names = tag_names

    @classmethod
    def from_probabilities(
        cls,
        item_ids: np.ndarray,
        probabilities: np.ndarray,
        tag_names: list[str],
        threshold: float | np.ndarray,
    ) -> CatalogTags:
        """Keep each item's top tags at or above the threshold (one, or one per tag)."""
        tag_index, confidence = _top_tags(probabilities, threshold)
        return cls(np.asarray(item_ids, np.int64), tag_index, confidence, tag_names)

    @classmethod
    def empty(cls, tag_names: list[str]) -> CatalogTags:
        return cls(
            np.zeros(0, np.int64),
            np.zeros((0, STORED_TAGS), np.int32),
            np.zeros((0, STORED_TAGS), np.float32),
            tag_names,
        )

    def __len__(self) -> int:
        return len(self.item_ids)

    def multi_hot(self, item_ids: np.ndarray) -> np.ndarray:
        """(len(item_ids), V) uint8 in the order given; unknown ids get no tags."""
        tag_index, _, known = self.gather(item_ids)
        return _multi_hot(tag_index, known, len(self.tag_names))

    def rows_of(self, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids = np.asarray(item_ids, np.int64)
        if len(self.item_ids) == 0:
            return np.zeros(ids.shape, np.int64), np.zeros(ids.shape, bool)
        pos = np.minimum(np.searchsorted(self.item_ids, ids), len(self.item_ids) - 1)
        known = self.item_ids[pos] == ids
        return np.where(known, pos, 0), known

    def gather(self, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tag rows and confidences per requested id (garbage where unknown) + known mask."""
        rows, known = self.rows_of(item_ids)
        if len(self.item_ids) == 0:
            shape = (len(rows), STORED_TAGS)
            return np.full(shape, -1, np.int32), np.zeros(shape, np.float32), known
        return self.tag_index[rows], self.confidence[rows], known

    def lookup(self, item_ids: np.ndarray, max_tags: int) -> tuple[list[TagPairs], np.ndarray]:
        """Tags per known id (request order) and the mask of known ids."""
        tag_index, confidence, known = self.gather(item_ids)
        return _pairs(tag_index[known], confidence[known], max_tags, self.tag_names), known

    def merged(self, other: CatalogTags) -> CatalogTags:
        """A new table: this one's items, replaced or extended by ``other``'s."""
        keep = ~np.isin(self.item_ids, other.item_ids)
        return CatalogTags(
            np.concatenate([self.item_ids[keep], other.item_ids]),
            np.concatenate([self.tag_index[keep], other.tag_index]),
            np.concatenate([self.confidence[keep], other.confidence]),
            self.tag_names,
        )

    def without(self, item_ids: np.ndarray) -> CatalogTags:
        keep = ~np.isin(self.item_ids, np.asarray(item_ids, np.int64))
        return CatalogTags(
            self.item_ids[keep], self.tag_index[keep], self.confidence[keep], self.tag_names
        )

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(
            directory / CATALOG_FILE,
            item_ids=self.item_ids,
            tag_index=self.tag_index,
            confidence=self.confidence,
            tag_names=np.array(self.tag_names, dtype=str),
        )

    @classmethod
    def load(cls, directory: Path) -> CatalogTags:
        data = np.load(directory / CATALOG_FILE)
        return cls(
            data["item_ids"],
            data["tag_index"],
            data["confidence"],
            [str(t) for t in data["tag_names"]],
        )


def _pairs(
    tag_index: np.ndarray, confidence: np.ndarray, max_tags: int, names: list[str]
) -> list[TagPairs]:
    result: list[TagPairs] = []
    for idx_row, conf_row in zip(tag_index[:, :max_tags], confidence[:, :max_tags], strict=True):
        tags = []
        for idx, conf in zip(idx_row, conf_row, strict=True):
            if idx < 0:
                break
            tags.append((names[idx], float(conf)))
        result.append(tags)
    return result


def _multi_hot(tag_index: np.ndarray, known: np.ndarray, num_tags: int) -> np.ndarray:
    out = np.zeros((len(tag_index), num_tags), np.uint8)
    r, c = np.nonzero((tag_index >= 0) & known[:, None])
    out[r, tag_index[r, c]] = 1
    return out


@dataclass(frozen=True)
class _Snapshot:
    base: CatalogTags  # the trained catalogue (or the last compaction)
    overlay: CatalogTags  # upserted items; they win over base rows with the same id
    deleted: np.ndarray  # sorted ids removed from base (never in overlay)

    def gather(self, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids = np.asarray(item_ids, np.int64)
        b_idx, b_conf, b_known = self.base.gather(ids)
        o_idx, o_conf, o_known = self.overlay.gather(ids)
        if len(self.deleted):
            b_known &= ~np.isin(ids, self.deleted)
        use_overlay = o_known[:, None]
        return (
            np.where(use_overlay, o_idx, b_idx),
            np.where(use_overlay, o_conf, b_conf),
            o_known | b_known,
        )


class LiveCatalogTags:
    """Catalogue tags that accept upserts and deletes while being served (copy-on-write).

    Writes cost O(overlay) until the overlay passes ``compact_at`` items (default: an
    eighth of the catalogue, at least 1024), when it is folded into a new base, O(N) once.
    """

    def __init__(self, base: CatalogTags, compact_at: int | None = None) -> None:
        self._snapshot = _Snapshot(base, CatalogTags.empty(base.tag_names), np.zeros(0, np.int64))
        self._write_lock = threading.Lock()
        self._compact_at = compact_at

    @property
    def tag_names(self) -> list[str]:
        return self._snapshot.base.tag_names

    def __len__(self) -> int:
        snap = self._snapshot
        return (
            len(snap.base)
            - len(snap.deleted)
            + int((~np.isin(snap.overlay.item_ids, snap.base.item_ids)).sum())
        )

    def __contains__(self, item_id: object) -> bool:
        if not isinstance(item_id, int | np.integer):
            return False
        return bool(self._snapshot.gather(np.array([item_id], np.int64))[2][0])

    def lookup(self, item_ids: np.ndarray, max_tags: int) -> tuple[list[TagPairs], np.ndarray]:
        """Tags per known id (request order) and the mask of known ids, from one snapshot."""
        snap = self._snapshot  # read once: a concurrent write publishes a new object
        tag_index, confidence, known = snap.gather(item_ids)
        return _pairs(tag_index[known], confidence[known], max_tags, self.tag_names), known

    def multi_hot(self, item_ids: np.ndarray) -> np.ndarray:
        tag_index, _, known = self._snapshot.gather(item_ids)
        return _multi_hot(tag_index, known, len(self.tag_names))

    def upsert(self, items: CatalogTags) -> None:
        """Add or replace these items' tags (same vocabulary)."""
        if items.tag_names != self.tag_names:
            raise ValueError("upserted tags use a different vocabulary")
        if len(np.unique(items.item_ids)) != len(items.item_ids):
            raise ValueError("duplicate item ids in one upsert")
        with self._write_lock:
            snap = self._snapshot
            deleted = snap.deleted[~np.isin(snap.deleted, items.item_ids)]
            self._publish(_Snapshot(snap.base, snap.overlay.merged(items), deleted))

    def upsert_probabilities(
        self, item_ids: np.ndarray, probabilities: np.ndarray, thresholds: float | np.ndarray
    ) -> None:
        self.upsert(
            CatalogTags.from_probabilities(item_ids, probabilities, self.tag_names, thresholds)
        )

    def delete(self, item_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Remove items; returns the ids that were present (the rest are ignored)."""
        ids = np.unique(np.asarray(item_ids, np.int64))
        with self._write_lock:
            snap = self._snapshot
            present = snap.gather(ids)[2]
            removed = ids[present]
            in_base = removed[snap.base.rows_of(removed)[1]]
            self._publish(
                _Snapshot(
                    snap.base,
                    snap.overlay.without(removed),
                    np.union1d(snap.deleted, in_base),
                )
            )
        return removed

    def _publish(self, snap: _Snapshot) -> None:
        limit = self._compact_at
        if limit is None:
            limit = max(1024, len(snap.base) // 8)
        if len(snap.overlay) + len(snap.deleted) > limit:
            base = snap.base.without(snap.deleted).merged(snap.overlay)
            snap = _Snapshot(base, CatalogTags.empty(base.tag_names), np.zeros(0, np.int64))
        self._snapshot = snap  # one reference assignment: readers see old or new, whole
