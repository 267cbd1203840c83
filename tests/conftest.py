"""Shared fixtures: one small but real trained artifact for the whole test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

from pipeline.train import TrainingConfig, train_all
from recdata.synthetic import generate

# Property tests draw the same examples every run, so a failing CI run fails the same way
# on a laptop; HYPOTHESIS_PROFILE=hunt draws new ones (a longer local search).
settings.register_profile("suite", derandomize=True, database=None)
settings.register_profile("hunt", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))

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
