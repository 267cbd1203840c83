"""Shared fixtures: one small but real trained artifact for the whole test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.train import TrainingConfig, train_all
from recdata.synthetic import generate

TEST_ITEMS = 2000
TEST_USERS = 800


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train all three models on held-out-evaluated synthetic data (~1 min on 2 cores).
    RECSERVE_TEST_ARTIFACTS=<version dir> reuses one from an earlier run (local iteration;
    tests only read it, CI always trains)."""
    reuse = os.environ.get("RECSERVE_TEST_ARTIFACTS")
    if reuse:
        return Path(reuse)
    root = tmp_path_factory.mktemp("artifacts")
    dataset = generate(num_items=TEST_ITEMS, num_users=TEST_USERS, seed=7)
    return train_all(dataset, root, TrainingConfig(), progress=lambda _line: None)
