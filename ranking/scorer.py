"""What the ranking service serves: score candidates for one user, or for a micro-batch of
requests in one forward pass, and return each request's top N.

The scorer runs the exported program (ranking/export.py), not the training code: loading
imports nothing from ranking.model. The artifact's feature schema (manifest, ranker.json and
the one recorded inside the exported file) must match the features this build computes.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ranking.export import EXPORT_FILE, load_exported, save_exported
from ranking.features import DENSE_FEATURES, MAX_HISTORY, FeatureBuilder
from ranking.live_items import RankingItem, with_items
from recdata.items import ItemTable
from retrieval.covisitation import FILE as COVIS_FILE
from retrieval.covisitation import CoVisitation

if TYPE_CHECKING:  # the training side only: serving never imports the model class
    from ranking.model import Ranker

logger = logging.getLogger(__name__)

MODEL_FILE = "ranker.pt"  # eager weights (state dict): for fine-tuning and inspection
CONFIG_FILE = "ranker.json"
# A forward over this many (user, candidate) pairs at most: per-pair CPU cost is lowest
# around 2-4k pairs and grows past ~8k (intermediates fall out of cache; measured in
# bench/ranking_serving.py), and it bounds memory for 32 requests of 2,000 candidates.
MAX_PAIRS_PER_FORWARD = 4096


class UnknownCandidates(ValueError):
    def __init__(self, unknown: np.ndarray) -> None:
        self.unknown = unknown
        sample = ", ".join(str(i) for i in unknown[:5])
        super().__init__(f"{len(unknown)} candidate ids are not in the catalogue (e.g. {sample})")


class IncompatibleRanker(ValueError):
    """The artifact's ranker does not fit this build or this catalogue."""


@dataclass
class Ranked:
    item_ids: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True, eq=False)  # holds arrays: compare by identity
class RankQuery:
    """The arguments of one `RankingScorer.rank` call."""

    recent_item_ids: np.ndarray
    candidate_ids: np.ndarray
    candidate_scores: np.ndarray | None
    num_items: int


@dataclass(eq=False)
class _Prepared:
    history: np.ndarray  # known history rows
    rows: np.ndarray  # candidate rows
    query: RankQuery


def save_ranker(directory: Path, model: Ranker, covisitation: CoVisitation | None = None) -> None:
    """ranker.pt (eager weights), ranker.json (config + feature schema), ranker.pt2 (the
    exported program the service loads) and a copy of the co-visitation table."""
    directory.mkdir(parents=True, exist_ok=True)
    if covisitation is not None:  # a copy: the ranking service deploys on its own
        covisitation.save(directory)
    torch.save(model.state_dict(), directory / MODEL_FILE)
    (directory / CONFIG_FILE).write_text(
        json.dumps({"model": model.cfg.to_dict(), "dense_features": list(DENSE_FEATURES)})
    )
    save_exported(directory / EXPORT_FILE, model)


def resolve_device(device: str) -> torch.device:
    """auto → CUDA when torch sees a GPU, else CPU; cuda/gpu without one is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device in ("cuda", "gpu"):
        if not torch.cuda.is_available():
            raise IncompatibleRanker(
                f"--device {device}: torch sees no CUDA device (use auto or cpu)"
            )
        return torch.device("cuda")
    if device == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device {device!r} (auto, cpu, cuda)")


class RankingScorer:
    def __init__(
        self,
        items: ItemTable,
        model: nn.Module,
        covisitation: CoVisitation | None = None,
        device: torch.device | str = "cpu",
        model_vocabulary: tuple[int, int] | None = None,
    ) -> None:
        """`model`: the exported module (as loaded) or an eager Ranker; same inputs.
        `model_vocabulary`: see FeatureBuilder (a catalogue grown by live items)."""
        self.items = items
        self.model = model
        self.device = torch.device(device)
        self.features = FeatureBuilder(
            items, covisitation=covisitation, model_vocabulary=model_vocabulary
        )

    def with_items(self, new: Sequence[RankingItem]) -> tuple[RankingScorer, int]:
        """This scorer over a catalogue with `new` added or changed (ranking/live_items.py):
        same model, new feature columns. Returns it and how many items were known."""
        table, updated = with_items(self.items, new)
        vocabulary = self.features.model_vocabulary
        scorer = RankingScorer(
            table, self.model, self.features.covisitation, self.device, vocabulary
        )
        return scorer, updated

    @classmethod
    def load(cls, version_dir: Path, device: str = "cpu") -> RankingScorer:
        items = ItemTable.load(version_dir / "items")
        directory = version_dir / "ranking"
        if not (directory / EXPORT_FILE).exists():
            raise IncompatibleRanker(
                f"{directory} has no exported ranker ({EXPORT_FILE}); retrain this version"
            )
        target = resolve_device(device)
        model, meta = load_exported(directory / EXPORT_FILE, target)
        config = json.loads((directory / CONFIG_FILE).read_text())
        manifest_path = version_dir / "manifest.json"
        schemas = {"exported ranker": meta["dense_features"], CONFIG_FILE: config["dense_features"]}
        if manifest_path.exists():  # absent only while training evaluates the written files
            schemas["manifest"] = json.loads(manifest_path.read_text())["feature_schema"]
        for source, schema in schemas.items():
            if schema != list(DENSE_FEATURES):
                raise IncompatibleRanker(
                    f"ranker was trained with features {schema} ({source}), "
                    f"this build computes {list(DENSE_FEATURES)}"
                )
        covisitation = CoVisitation.load(directory) if (directory / COVIS_FILE).exists() else None
        scorer = cls(items, model, covisitation, target)
        _check_fits(meta, scorer.features)
        return scorer

    def rank(
        self,
        recent_item_ids: np.ndarray,
        candidate_ids: np.ndarray,
        candidate_scores: np.ndarray | None,
        num_items: int,
    ) -> Ranked:
        result = self.rank_many(
            [RankQuery(recent_item_ids, candidate_ids, candidate_scores, num_items)]
        )[0]
        if isinstance(result, Exception):
            raise result
        return result

    @torch.inference_mode()
    def rank_many(self, queries: list[RankQuery]) -> list[Ranked | Exception]:
        """One result per query, in order, each equal to what `rank` returns for it alone;
        the candidates of every query go through one forward pass (up to
        MAX_PAIRS_PER_FORWARD pairs each). A query with bad input gets its exception in its
        slot; the others are unaffected."""
        results: list[Ranked | Exception | None] = [None] * len(queries)
        prepared: list[tuple[int, _Prepared]] = []
        for slot, query in enumerate(queries):
            try:
                p = self._prepare(query)
            except Exception as exc:
                results[slot] = exc
                continue
            if len(p.rows) == 0:
                results[slot] = Ranked(np.empty(0, np.int64), np.empty(0, np.float32))
            else:
                prepared.append((slot, p))
        for chunk in _chunks(prepared, MAX_PAIRS_PER_FORWARD):
            logits: list[np.ndarray | Exception]
            try:
                logits = list(self._forward([p for _, p in chunk]))
            except Exception as exc:
                if len(chunk) == 1:
                    logits = [exc]
                else:  # isolate whatever failed in the shared pass: each request alone
                    logger.exception("batched ranking failed; scoring %d alone", len(chunk))
                    logits = [self._forward_alone(p) for _, p in chunk]
            for (slot, p), scores in zip(chunk, logits, strict=True):
                results[slot] = scores if isinstance(scores, Exception) else _top(p, scores)
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]  # every slot is filled above

    def _prepare(self, query: RankQuery) -> _Prepared:
        rows, known = self.items.rows_of(query.candidate_ids)
        if not known.all():
            raise UnknownCandidates(np.asarray(query.candidate_ids)[~known])
        hist_rows, hist_known = self.items.rows_of(query.recent_item_ids)
        return _Prepared(hist_rows[hist_known], rows, query)

    def _forward_alone(self, p: _Prepared) -> np.ndarray | Exception:
        try:
            return self._forward([p])[0]
        except Exception as exc:
            return exc

    def _forward(self, batch: list[_Prepared]) -> list[np.ndarray]:
        """Logits per member, in order, from one forward pass over all their pairs."""
        inputs = self.features.build_ragged(
            [p.history for p in batch],
            [p.rows for p in batch],
            [
                None
                if p.query.candidate_scores is None
                else np.asarray(p.query.candidate_scores, np.float32)
                for p in batch
            ],
        ).to(self.device)
        logits = self.model(*inputs.tensors()).float().cpu().numpy()
        return np.split(logits, np.cumsum([len(p.rows) for p in batch])[:-1])


def rank_grouped(items: list[tuple[RankingScorer, RankQuery]]) -> list[Ranked | Exception]:
    """`rank_many` for requests that each carry the scorer they started on: during a hot
    reload one micro-batch can hold requests for the old and the new version, and each
    finishes on its own. Results in input order."""
    groups: dict[int, list[int]] = defaultdict(list)
    for position, (scorer, _) in enumerate(items):
        groups[id(scorer)].append(position)
    results: list[Ranked | Exception | None] = [None] * len(items)
    for positions in groups.values():
        scorer = items[positions[0]][0]
        answers = scorer.rank_many([items[i][1] for i in positions])
        for i, answer in zip(positions, answers, strict=True):
            results[i] = answer
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]  # every slot is filled above


def _top(p: _Prepared, logits: np.ndarray) -> Ranked:
    n = len(p.rows) if p.query.num_items <= 0 else min(p.query.num_items, len(p.rows))
    top = np.argsort(-logits, kind="stable")[:n]
    ids = np.asarray(p.query.candidate_ids, dtype=np.int64)[top]
    return Ranked(ids, logits[top].astype(np.float32))


def _chunks(
    prepared: list[tuple[int, _Prepared]], max_pairs: int
) -> list[list[tuple[int, _Prepared]]]:
    """Consecutive groups of whole requests with at most max_pairs pairs (a larger request
    gets a group of its own)."""
    chunks: list[list[tuple[int, _Prepared]]] = []
    size = 0
    for entry in prepared:
        n = len(entry[1].rows)
        if not chunks or size + n > max_pairs:
            chunks.append([])
            size = 0
        chunks[-1].append(entry)
        size += n
    return chunks


def _check_fits(meta: dict, features: FeatureBuilder) -> None:
    """The exported graph's fixed input sizes against this catalogue's columns."""
    cfg = meta["model"]
    items = features.items
    expected = {
        "max_history": (meta.get("max_history"), MAX_HISTORY),
        "tag columns": (max(cfg["num_tags"], 1), features.num_tags),
        "categories": (cfg["num_categories"], len(items.category_names)),
        "brands": (cfg["num_brands"], len(items.brand_names)),
    }
    for what, (trained, here) in expected.items():
        if trained != here:
            raise IncompatibleRanker(
                f"ranker was exported for {trained} {what}, the catalogue has {here}"
            )
