"""What the retrieval service serves: user tower → filtered FAISS search → top-K items."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import torch

from recdata.items import ItemTable
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
    scores: np.ndarray  # float32
    cold_start: bool
    unknown_recent_items: int
    exhausted: bool


def save_retrieval(
    directory: Path, model: TwoTower, embeddings: np.ndarray, index: faiss.Index, index_kind: str
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), directory / MODEL_FILE)
    (directory / CONFIG_FILE).write_text(
        json.dumps({"model": model.cfg.to_dict(), "index_kind": index_kind})
    )
    np.save(directory / EMBEDDINGS_FILE, embeddings)
    faiss.write_index(index, str(directory / INDEX_FILE))


class Retriever:
    def __init__(self, items: ItemTable, model: TwoTower, index: ItemIndex) -> None:
        self.items = items
        self.model = model
        self.index = index
        # Cold-start order: most popular first, ties broken by row for determinism.
        self.popular_rows = np.lexsort((np.arange(len(items)), -items.popularity))
        pop = np.log1p(items.popularity[self.popular_rows])
        self.popular_scores = (pop / max(float(pop.max()), 1e-6)).astype(np.float32)

    @classmethod
    def load(cls, version_dir: Path, device: str = "auto") -> Retriever:
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
        )
        return cls(items, model, index)

    @torch.inference_mode()
    def user_vector(self, history_rows: np.ndarray) -> np.ndarray:
        rows, cats = pad_histories([history_rows], self.items, self.model.cfg.max_history)
        return self.model.user(rows, cats)[0].numpy()

    def retrieve(
        self,
        recent_item_ids: np.ndarray,
        k: int,
        exclude_item_ids: np.ndarray | None = None,
        include_categories: list[str] | None = None,
        exclude_categories: list[str] | None = None,
    ) -> Candidates:
        rows, known = self.items.rows_of(recent_item_ids)
        history = rows[known]
        exclude_rows = np.empty(0, np.int64)
        if exclude_item_ids is not None and len(exclude_item_ids):
            ex_rows, ex_known = self.items.rows_of(exclude_item_ids)
            exclude_rows = ex_rows[ex_known]
        inc = self.items.category_rows(include_categories or [])
        exc = self.items.category_rows(exclude_categories or [])
        if include_categories and len(inc) == 0:  # only unknown categories: nothing eligible
            return Candidates(
                np.empty(0, np.int64), np.empty(0, np.float32), False, int((~known).sum()), True
            )
        if len(history) == 0:
            return self._popular(k, exclude_rows, inc, exc, int((~known).sum()))
        result = self.index.search(self.user_vector(history), k, exclude_rows, inc, exc)
        return Candidates(
            self.items.item_ids[result.rows],
            result.scores,
            False,
            int((~known).sum()),
            result.exhausted,
        )

    def _popular(
        self, k: int, exclude_rows: np.ndarray, inc: np.ndarray, exc: np.ndarray, unknown: int
    ) -> Candidates:
        mask = self.index.eligible_mask(exclude_rows, inc, exc)
        eligible = mask[self.popular_rows]
        rows = self.popular_rows[eligible][:k]
        scores = self.popular_scores[eligible][:k]
        return Candidates(self.items.item_ids[rows], scores, True, unknown, len(rows) < k)
