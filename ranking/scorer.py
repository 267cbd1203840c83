"""What the ranking service serves: score candidates for one user and return the top N."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ranking.features import DENSE_FEATURES, FeatureBuilder
from ranking.model import Ranker, RankerConfig
from recdata.items import ItemTable
from retrieval.covisitation import FILE as COVIS_FILE
from retrieval.covisitation import CoVisitation

MODEL_FILE = "ranker.pt"
CONFIG_FILE = "ranker.json"


class UnknownCandidates(ValueError):
    def __init__(self, unknown: np.ndarray) -> None:
        self.unknown = unknown
        sample = ", ".join(str(i) for i in unknown[:5])
        super().__init__(f"{len(unknown)} candidate ids are not in the catalogue (e.g. {sample})")


@dataclass
class Ranked:
    item_ids: np.ndarray
    scores: np.ndarray


def save_ranker(directory: Path, model: Ranker, covisitation: CoVisitation | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    if covisitation is not None:  # a copy: the ranking service deploys on its own
        covisitation.save(directory)
    torch.save(model.state_dict(), directory / MODEL_FILE)
    (directory / CONFIG_FILE).write_text(
        json.dumps({"model": model.cfg.to_dict(), "dense_features": list(DENSE_FEATURES)})
    )


class RankingScorer:
    def __init__(
        self, items: ItemTable, model: Ranker, covisitation: CoVisitation | None = None
    ) -> None:
        self.items = items
        self.model = model
        self.features = FeatureBuilder(items, covisitation=covisitation)

    @classmethod
    def load(cls, version_dir: Path) -> RankingScorer:
        items = ItemTable.load(version_dir / "items")
        directory = version_dir / "ranking"
        config = json.loads((directory / CONFIG_FILE).read_text())
        if config["dense_features"] != list(DENSE_FEATURES):
            raise ValueError(
                f"ranker was trained with features {config['dense_features']}, "
                f"this build computes {list(DENSE_FEATURES)}"
            )
        model = Ranker(RankerConfig(**config["model"]))
        model.load_state_dict(
            torch.load(directory / MODEL_FILE, map_location="cpu", weights_only=True)
        )
        model.eval()
        covisitation = CoVisitation.load(directory) if (directory / COVIS_FILE).exists() else None
        return cls(items, model, covisitation)

    @torch.inference_mode()
    def rank(
        self,
        recent_item_ids: np.ndarray,
        candidate_ids: np.ndarray,
        candidate_scores: np.ndarray | None,
        num_items: int,
    ) -> Ranked:
        rows, known = self.items.rows_of(candidate_ids)
        if not known.all():
            raise UnknownCandidates(np.asarray(candidate_ids)[~known])
        if len(rows) == 0:
            return Ranked(np.empty(0, np.int64), np.empty(0, np.float32))
        hist_rows, hist_known = self.items.rows_of(recent_item_ids)
        batch = self.features.build(
            [hist_rows[hist_known]],
            rows[None, :],
            None if candidate_scores is None else candidate_scores[None, :],
        )
        logits = self.model(batch)[0].numpy()
        n = len(rows) if num_items <= 0 else min(num_items, len(rows))
        top = np.argsort(-logits, kind="stable")[:n]
        return Ranked(
            np.asarray(candidate_ids, dtype=np.int64)[top], logits[top].astype(np.float32)
        )
