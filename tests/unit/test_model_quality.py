"""Each trained model beats its trivial baseline on held-out synthetic data."""

from __future__ import annotations

import json
from pathlib import Path


def _metrics(artifacts: Path) -> dict:
    return json.loads((artifacts / "manifest.json").read_text())["metrics"]


def test_retrieval_beats_popularity(artifacts: Path) -> None:
    m = _metrics(artifacts)
    popularity = m["baselines"]["popularity"]
    assert m["retrieval"]["recall@50"] > 1.3 * popularity["recall@50"]
    assert m["retrieval"]["ndcg@10"] > 1.3 * popularity["ndcg@10"]


def test_ranking_beats_popularity_and_does_not_lose_to_retrieval(artifacts: Path) -> None:
    m = _metrics(artifacts)
    assert m["ranking"]["ndcg@10"] > 1.3 * m["baselines"]["popularity"]["ndcg@10"]
    assert m["ranking"]["ndcg@10"] >= 0.95 * m["retrieval"]["ndcg@10"]


def test_tagger_beats_most_frequent_tags(artifacts: Path) -> None:
    tagging = _metrics(artifacts)["tagging"]
    assert tagging["micro_f1"] > tagging["baseline_micro_f1"] + 0.1
