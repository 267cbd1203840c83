"""Draining: SIGTERM on a gateway process (health turns NOT_SERVING, the in-flight call
completes), health watchers let go, the drain delay."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recsys.v1 import (
    gateway_pb2,
    gateway_pb2_grpc,
    ranking_pb2,
    ranking_pb2_grpc,
    tagging_pb2,
    tagging_pb2_grpc,
)
from services.retrieval_service import RetrievalApp, RetrievalConfig
from services.tagging_service import TaggingApp, TaggingConfig
from tests.integration.cluster import Cluster, HeldStage, stage_serving

ROOT = Path(__file__).resolve().parents[2]


class HeldRanking(HeldStage, ranking_pb2_grpc.RankingServiceServicer):
    """A real ranking server whose answers the test releases."""

    def Rank(
        self, request: ranking_pb2.RankRequest, context: grpc.ServicerContext
    ) -> ranking_pb2.RankResponse:
        self.hold()
        n = request.num_items or len(request.candidate_item_ids)
        return ranking_pb2.RankResponse(
            item_ids=request.candidate_item_ids[:n],
            scores=request.candidate_scores[:n],
            model_version="held",
        )


def _wait_serving(health: health_pb2_grpc.HealthStub, process: subprocess.Popen) -> None:
    """Block on the server's health stream; fail at once, with its log, if it exits."""
    for _ in range(60):
        if process.poll() is not None:
            pytest.fail(f"gateway exited {process.returncode}: {process.stderr.read()[-2000:]}")
        try:
            stream = health.Watch(
                health_pb2.HealthCheckRequest(service=""), timeout=2, wait_for_ready=True
            )
            for update in stream:
                if update.status == health_pb2.HealthCheckResponse.SERVING:
                    stream.cancel()
                    return
        except grpc.RpcError as err:
            if err.code() not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
                raise
    pytest.fail("gateway did not become SERVING within 120 s")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def held_ranking() -> Iterator[HeldRanking]:
    servicer = HeldRanking()
    with stage_serving(servicer, ranking_pb2_grpc.add_RankingServiceServicer_to_server):
        yield servicer


def test_sigterm_drains_in_flight_request(artifacts: Path, held_ranking: HeldRanking) -> None:
    ranking = held_ranking
    stages = Cluster()
    stages.start("retrieval", RetrievalApp(RetrievalConfig(artifacts)))
    stages.start("tagging", TaggingApp(TaggingConfig(artifacts)))
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.cli",
            "serve",
            "gateway",
            "--artifacts",
            str(artifacts),
            "--port",
            str(port),
            "--metrics-port",
            "-1",
            "--retrieval-addr",
            stages.address("retrieval"),
            "--ranking-addr",
            ranking.address,
            "--tagging-addr",
            stages.address("tagging"),
            "--default-deadline",
            "30",
            "--grace",
            "20",
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            _wait_serving(health, process)
            stub = gateway_pb2_grpc.RecommendationServiceStub(channel)
            call = stub.Recommend.future(
                gateway_pb2.RecommendRequest(user_id="u000001", num_items=5), timeout=60
            )
            assert ranking.received.wait(timeout=30), "request never reached ranking"

            # Watch opened before the signal: once draining starts the server takes no new
            # streams, but this one reports the change while the call is still in flight.
            watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            process.send_signal(signal.SIGTERM)
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
            watch.cancel()
            assert not call.done()
            ranking.release.set()
            response = call.result(timeout=30)
        assert len(response.items) == 5
        assert response.model_versions["ranking"] == "held"
        assert process.wait(timeout=30) == 0
        assert b'"msg": "stopped"' in process.stderr.read()
    finally:
        ranking.release.set()
        if process.poll() is None:
            process.kill()
        stages.close()


def _stopping(cluster: Cluster, name: str, grace: float, drain_delay: float) -> Future:
    """`name`'s stop, started on the cluster's loop; its future."""
    server = cluster.servers[name]
    return asyncio.run_coroutine_threadsafe(server.stop(grace, drain_delay), cluster.loop)


def test_a_health_watch_ends_when_draining_starts(artifacts: Path) -> None:
    """A watching client (a load balancer, client-side health checking) is told NOT_SERVING
    and let go: it no longer holds the drain for the whole grace period."""
    cluster = Cluster()
    try:
        cluster.start("tagging", TaggingApp(TaggingConfig(artifacts)))
        with grpc.insecure_channel(cluster.address("tagging")) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=""), timeout=60
            )
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            stopped = _stopping(cluster, "tagging", grace=60, drain_delay=0)
            statuses = [update.status for update in watch]  # to the end of the stream
            assert statuses[-1] == health_pb2.HealthCheckResponse.NOT_SERVING
            assert watch.code() == grpc.StatusCode.OK
            stopped.result(timeout=20)  # long before the 60 s grace
        cluster.servers.pop("tagging")
    finally:
        cluster.close()


def test_during_the_drain_delay_calls_are_served_and_health_says_not_serving(
    artifacts: Path,
) -> None:
    cluster = Cluster()
    try:
        cluster.start("tagging", TaggingApp(TaggingConfig(artifacts)))
        server = cluster.servers["tagging"]
        with grpc.insecure_channel(cluster.address("tagging")) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            stopped = _stopping(cluster, "tagging", grace=0, drain_delay=600)
            assert [u.status for u in watch][-1] == health_pb2.HealthCheckResponse.NOT_SERVING
            # The delay has begun: new calls are still answered, health says go elsewhere.
            check = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            assert check.status == health_pb2.HealthCheckResponse.NOT_SERVING
            tags = tagging_pb2_grpc.TaggingServiceStub(channel)
            assert tags.ListTags(tagging_pb2.ListTagsRequest(), timeout=10).tags
            assert not stopped.done()
            cluster.loop.call_soon_threadsafe(server.skip_drain_delay)  # a second SIGTERM
            stopped.result(timeout=20)
            with pytest.raises(grpc.RpcError) as refused:
                tags.ListTags(tagging_pb2.ListTagsRequest(), timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        cluster.servers.pop("tagging")
    finally:
        cluster.close()
