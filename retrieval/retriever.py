"""What the retrieval service serves: user tower → filtered FAISS search → top-K items."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import torch

from recdata.items import ItemTable, known_indices
from retrieval.covisitation import FILE as COVIS_FILE
from retrieval.covisitation import CoVisitation, fuse
from retrieval.history import pad_histories
from retrieval.index import ItemIndex
from retrieval.model import TwoTower, TwoTowerConfig

MODEL_FILE = "two_tower.pt"
CONFIG_FILE = "two_tower.json"
EMBEDDINGS_FILE = "item_embeddings.npy"
INDEX_FILE = "items.faiss"


@dataclass
class Candidates:
    item_ids: np.ndarray  # int64 external ids, best first
    scores: np.ndarray  # float32, descending: the fused ranking score
    two_tower_scores: np.ndarray  # float32 user · item inner products (the ranker's feature)
    cold_start: bool
    unknown_recent_items: int
    exhausted: bool


def save_retrieval(
    directory: Path,
    model: TwoTower,
    embeddings: np.ndarray,
    index: faiss.Index,
    index_kind: str,
    covisitation: CoVisitation | None = None,
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    if covisitation is not None:
        covisitation.save(directory)
    torch.save(model.state_dict(), directory / MODEL_FILE)
    (directory / CONFIG_FILE).write_text(
        json.dumps({"model": model.cfg.to_dict(), "index_kind": index_kind})
    )
    np.save(directory / EMBEDDINGS_FILE, embeddings)
    faiss.write_index(index, str(directory / INDEX_FILE))


class Retriever:
    """Two sources, fused: the two-tower model over FAISS (exact-k under filters) and, when
    the artifact has one, item co-visitation of the user's newest items."""

    def __init__(
        self,
        items: ItemTable,
        model: TwoTower,
        index: ItemIndex,
        covisitation: CoVisitation | None = None,
        covisitation_share: float = 1.0,
    ) -> None:
        self.items = items
        self.model = model
        self.index = index
        self.covisitation = covisitation
        self.covisitation_share = covisitation_share
        # Cold-start order: most popular first, ties broken by row for determinism.
        self.popular_rows = np.lexsort((np.arange(len(items)), -items.popularity))
        pop = np.log1p(items.popularity[self.popular_rows])
        self.popular_scores = (pop / max(float(pop.max()), 1e-6)).astype(np.float32)

    @classmethod
    def load(cls, version_dir: Path, device: str = "auto", gpu_shard: bool = False) -> Retriever:
        items = ItemTable.load(version_dir / "items")
        directory = version_dir / "retrieval"
        config = json.loads((directory / CONFIG_FILE).read_text())
        model = TwoTower(TwoTowerConfig(**config["model"]))
        model.load_state_dict(
            torch.load(directory / MODEL_FILE, map_location="cpu", weights_only=True)
        )
        model.eval()
        embeddings = np.load(directory / EMBEDDINGS_FILE)
        index = ItemIndex.load(
            directory / INDEX_FILE,
            embeddings,
            items.categories,
            len(items.category_names),
            device=device,
            gpu_shard=gpu_shard,
        )
        covisitation = CoVisitation.load(directory) if (directory / COVIS_FILE).exists() else None
        return cls(items, model, index, covisitation)

    @torch.inference_mode()
    def user_vector(self, history_rows: np.ndarray) -> np.ndarray:
        rows, cats = pad_histories([history_rows], self.items, self.model.cfg.max_history)
        return self.model.user(rows, cats)[0].numpy()

    def with_index(self, index: ItemIndex) -> Retriever:
        """This retriever over another view of the index (a new live segment): a shallow
        copy, so the model, the catalogue and co-visitation are shared."""
        other = copy.copy(self)
        other.index = index
        return other

    @property
    def category_names(self) -> list[str]:
        """Base categories, then any first seen in live catalogue updates."""
        live = self.index.live
        return list(live.category_names) if live is not None else self.items.category_names

    def category_rows(self, names: list[str]) -> np.ndarray:
        """Category indices for names; unknown names are ignored (they match no item)."""
        live = self.index.live
        if live is None:
            return self.items.category_rows(names)
        return known_indices(live.category_names, names)

    def ids_of(self, rows: np.ndarray) -> np.ndarray:
        """External ids of base and live (virtual) rows."""
        live = self.index.live
        base = self.items.item_ids
        if live is None or len(live) == 0 or len(rows) == 0 or rows.max() < len(base):
            return base[rows]
        out = np.empty(len(rows), np.int64)
        in_base = rows < len(base)
        out[in_base] = base[rows[in_base]]
        out[~in_base] = live.ids[rows[~in_base] - len(base)]
        return out

    def exclusion_rows(self, item_ids: np.ndarray | None) -> np.ndarray:
        """Rows (base and live) of ids to exclude; unknown ids are dropped."""
        if item_ids is None or len(item_ids) == 0:
            return np.empty(0, np.int64)
        rows, known = self.items.rows_of(item_ids)
        out = rows[known]
        live = self.index.live
        if live is not None and len(live):
            live_rows, live_known = live.rows_of(item_ids)
            out = np.concatenate([out, live_rows[live_known]])
        return out

    def unknown_count(self, known: np.ndarray, item_ids: np.ndarray) -> int:
        """Recent ids neither in the trained catalogue nor added live."""
        unknown = ~known
        live = self.index.live
        if live is not None and len(live) and unknown.any():
            unknown &= ~live.rows_of(item_ids)[1]
        return int(unknown.sum())

    def retrieve(
        self,
        recent_item_ids: np.ndarray,
        k: int,
        exclude_item_ids: np.ndarray | None = None,
        include_categories: list[str] | None = None,
        exclude_categories: list[str] | None = None,
    ) -> Candidates:
        # Live-added items in the history are not in the user tower's vocabulary: the
        # model reads the trained ones (changed items keep their trained row).
        rows, known = self.items.rows_of(recent_item_ids)
        history = rows[known]
        unknown = self.unknown_count(known, recent_item_ids)
        exclude_rows = self.exclusion_rows(exclude_item_ids)
        inc = self.category_rows(include_categories or [])
        exc = self.category_rows(exclude_categories or [])
        if include_categories and len(inc) == 0:  # only unknown categories: nothing eligible
            empty = np.empty(0, np.float32)
            return Candidates(np.empty(0, np.int64), empty, empty, False, unknown, True)
        if len(history) == 0:
            return self._popular(k, exclude_rows, inc, exc, unknown)
        user = self.user_vector(history)
        result = self.index.search(user, k, exclude_rows, inc, exc)
        rows, scores, inner = result.rows, result.scores, result.scores
        if self.covisitation is not None:
            covisited, _ = self.covisitation.candidates(
                history,
                self.covisitation_k(k),
                eligible=self.covisitation_eligible(),
                exclude=exclude_rows,
            )
            covisited = covisited[self._category_ok(covisited, inc, exc)]
            rows, scores = fuse(rows, covisited, k)
            inner = (self.index.vectors(rows) @ user).astype(np.float32)
        return Candidates(
            self.ids_of(rows),
            scores,
            inner,
            False,
            unknown,
            result.exhausted,
        )

    def covisitation_eligible(self) -> np.ndarray | None:
        """Co-visitation knows base rows only; dead ones (deleted, changed) must not return."""
        live = self.index.live
        return live.alive if live is not None and len(live.dead_rows) else None

    def covisitation_k(self, k: int) -> int:
        return max(1, int(k * self.covisitation_share))

    def _category_ok(self, rows: np.ndarray, inc: np.ndarray, exc: np.ndarray) -> np.ndarray:
        """For co-visited (base) rows."""
        cats = self.items.categories[rows]
        ok = np.ones(len(rows), bool)
        if len(inc):
            ok &= np.isin(cats, inc)
        if len(exc):
            ok &= ~np.isin(cats, exc)
        return ok

    def retrieve_rows_many(
        self, histories: list[np.ndarray], k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Batched retrieval by item rows, each user's history excluded (evaluation and the
        ranker's training data: the very candidates the service would return)."""
        from retrieval.train import user_embeddings

        vecs = user_embeddings(self.model, histories, self.items)
        exclusions = [np.unique(h) for h in histories]
        primary = self.index.search_many(vecs, k, exclusions)
        rows = np.full((len(histories), k), -1, np.int64)
        for i, history in enumerate(histories):
            first = primary[i][primary[i] >= 0]
            if self.covisitation is not None:
                covisited, _ = self.covisitation.candidates(
                    history, self.covisitation_k(k), exclude=exclusions[i]
                )
                first, _ = fuse(first, covisited, k)
            rows[i, : len(first)] = first
        safe = np.where(rows >= 0, rows, 0)
        vectors = self.index.vectors(safe.ravel()).reshape(*safe.shape, -1)
        scores = np.einsum("ud,ukd->uk", vecs, vectors).astype(np.float32)
        return rows, scores

    def _popular(
        self, k: int, exclude_rows: np.ndarray, inc: np.ndarray, exc: np.ndarray, unknown: int
    ) -> Candidates:
        """Most popular eligible items; live-added ones have no interactions yet and follow
        the trained catalogue (that only matters when it has fewer than k eligible)."""
        mask = self.index.eligible_mask(exclude_rows, inc, exc)
        eligible = mask[self.popular_rows]
        rows = self.popular_rows[eligible][:k]
        scores = self.popular_scores[eligible][:k]
        live = self.index.live
        if len(rows) < k and live is not None and len(live):
            extra = live.base_size + np.flatnonzero(live.eligible(exclude_rows, inc, exc))
            extra = extra[: k - len(rows)]
            rows = np.concatenate([rows, extra])
            scores = np.concatenate([scores, np.zeros(len(extra), np.float32)])
        return Candidates(
            self.ids_of(rows), scores, np.zeros_like(scores), True, unknown, len(rows) < k
        )
