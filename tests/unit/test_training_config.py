"""Per-data-set training configuration (issue 3) and the served two-tower retrained on
every training event."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.train import TrainingConfig, train_all
from recdata.synthetic import generate
from retrieval.retriever import Retriever


def test_each_data_set_gets_the_configuration_its_validation_target_chose() -> None:
    default = TrainingConfig.for_dataset("synthetic")
    assert default.ranker.recent_covisitation
    assert not default.retrieval_on_all_events
    assert default.covisitation_neighbours == 100
    assert (default.ranker.hard_negatives, default.ranker.random_negatives) == (8, 2)
    assert TrainingConfig.for_dataset("generic") == default
    movielens = TrainingConfig.for_dataset("movielens")
    assert movielens.retrieval_on_all_events and movielens.covisitation_neighbours == 300
    assert (movielens.ranker.hard_negatives, movielens.ranker.random_negatives) == (32, 4)
    retail = TrainingConfig.for_dataset("online-retail")
    assert not retail.ranker.recent_covisitation and not retail.retrieval_on_all_events
    # for_dataset never changes the shared defaults.
    assert TrainingConfig.for_dataset("synthetic") == default


def test_retrieval_retrained_on_all_events_is_what_the_artifact_serves(tmp_path: Path) -> None:
    dataset = generate(num_items=300, num_users=120, mean_events_per_user=16, seed=3)
    config = TrainingConfig()
    config.retrieval_on_all_events = True
    config.covisitation_neighbours = 20
    config.tagger.epochs = config.two_tower.epochs = config.ranker.epochs = 1
    lines: list[str] = []
    version = train_all(dataset, tmp_path, config, progress=lines.append)
    assert any("retrieval for serving (every training event)" in line for line in lines)
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["training_config"]["retrieval_on_all_events"] is True
    assert manifest["training_config"]["covisitation_neighbours"] == 20
    retriever = Retriever.load(version, device="cpu")
    assert retriever.covisitation is not None
    assert retriever.covisitation.neighbors.shape[1] == 20
    assert "ranking" in manifest["metrics"]
