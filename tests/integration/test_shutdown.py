"""SIGTERM on a gateway process: health turns NOT_SERVING, the in-flight call completes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recsys.v1 import gateway_pb2, gateway_pb2_grpc, ranking_pb2, ranking_pb2_grpc
from services.retrieval_service import RetrievalApp, RetrievalConfig
from services.tagging_service import TaggingApp, TaggingConfig
from tests.integration.cluster import Cluster

ROOT = Path(__file__).resolve().parents[2]


class HeldRanking(ranking_pb2_grpc.RankingServiceServicer):
    """A real ranking server whose answers the test releases: it holds a request in flight
    for exactly as long as the test needs, without sleeping."""

    def __init__(self) -> None:
        self.received = threading.Event()
        self.release = threading.Event()

    def Rank(
        self, request: ranking_pb2.RankRequest, context: grpc.ServicerContext
    ) -> ranking_pb2.RankResponse:
        self.received.set()
        self.release.wait(timeout=30)
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
def held_ranking() -> Iterator[tuple[HeldRanking, int]]:
    servicer = HeldRanking()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    ranking_pb2_grpc.add_RankingServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    servicer.release.set()
    server.stop(0)


def test_sigterm_drains_in_flight_request(
    artifacts: Path, held_ranking: tuple[HeldRanking, int]
) -> None:
    ranking, ranking_port = held_ranking
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
            f"127.0.0.1:{ranking_port}",
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
