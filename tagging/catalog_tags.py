"""Precomputed tags of catalogue items, served from memory by GetItemTags."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CATALOG_FILE = "catalog_tags.npz"
STORED_TAGS = 8


class CatalogTags:
    def __init__(
        self,
        item_ids: np.ndarray,
        tag_index: np.ndarray,
        confidence: np.ndarray,
        tag_names: list[str],
    ) -> None:
        order = np.argsort(item_ids, kind="stable")
        self.item_ids = item_ids[order]
        self.tag_index = tag_index[order]  # (N, STORED_TAGS) int32, -1 = none
        self.confidence = confidence[order]  # (N, STORED_TAGS) float32, descending
        self.tag_names = tag_names

    @classmethod
    def from_probabilities(
        cls, item_ids: np.ndarray, probabilities: np.ndarray, tag_names: list[str], threshold: float
    ) -> CatalogTags:
        """Keep each item's top tags at or above the threshold."""
        k = min(STORED_TAGS, probabilities.shape[1])
        top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
        conf = np.take_along_axis(probabilities, top, axis=1)
        keep = conf >= threshold
        tag_index = np.full((len(item_ids), STORED_TAGS), -1, np.int32)
        confidence = np.zeros((len(item_ids), STORED_TAGS), np.float32)
        tag_index[:, :k] = np.where(keep, top, -1)
        confidence[:, :k] = np.where(keep, conf, 0.0)
        return cls(np.asarray(item_ids, np.int64), tag_index, confidence, tag_names)

    def multi_hot(self, item_ids: np.ndarray) -> np.ndarray:
        """(len(item_ids), V) uint8 in the order given; unknown ids get no tags."""
        out = np.zeros((len(item_ids), len(self.tag_names)), np.uint8)
        rows, known = self.rows_of(item_ids)
        idx = self.tag_index[rows]
        r, c = np.nonzero((idx >= 0) & known[:, None])
        out[r, idx[r, c]] = 1
        return out

    def rows_of(self, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids = np.asarray(item_ids, np.int64)
        if len(self.item_ids) == 0:
            return np.zeros(ids.shape, np.int64), np.zeros(ids.shape, bool)
        pos = np.minimum(np.searchsorted(self.item_ids, ids), len(self.item_ids) - 1)
        known = self.item_ids[pos] == ids
        return np.where(known, pos, 0), known

    def lookup(
        self, item_ids: np.ndarray, max_tags: int
    ) -> tuple[list[list[tuple[str, float]]], np.ndarray]:
        """Tags per known id (request order) and the mask of known ids."""
        rows, known = self.rows_of(item_ids)
        result: list[list[tuple[str, float]]] = []
        for row in rows[known]:
            tags = []
            for idx, conf in zip(
                self.tag_index[row, :max_tags], self.confidence[row, :max_tags], strict=True
            ):
                if idx < 0:
                    break
                tags.append((self.tag_names[idx], float(conf)))
            result.append(tags)
        return result, known

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
