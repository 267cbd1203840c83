"""Fixtures shared by the integration modules."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from tests.integration.cluster import Cluster, channels_to


@pytest.fixture(scope="module")
def channels(cluster: Cluster) -> Iterator[dict[str, grpc.Channel]]:
    """One channel per server of the module's own `cluster` fixture, closed with it."""
    with channels_to(cluster) as opened:
        yield opened
