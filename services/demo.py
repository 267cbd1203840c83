"""`recserve demo`: synthetic data → training → four services as separate processes →
real recommendations printed, then serve until Ctrl-C (or stop at once with --once)."""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recdata.artifacts import read_manifest
from recdata.feature_store import UserHistoryStore
from recdata.synthetic import generate
from recsys.v1 import gateway_pb2, gateway_pb2_grpc
from services.cli import DEFAULT_PORTS, serve_command

SERVICES = ("retrieval", "ranking", "tagging", "gateway")
READY_TIMEOUT_S = 180.0


def say(line: str) -> None:
    print(f"[demo] {line}", flush=True)


def _stop_requested(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM as Ctrl-C: the services are stopped on the way out


def run_demo(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    # SIGTERM's default action would kill this process outright and leave the four services
    # serving (a handler that is a Python function is not inherited by them).
    signal.signal(signal.SIGTERM, _stop_requested)
    say(f"generating synthetic data: {args.items} items, {args.users} users, seed {args.seed}")
    dataset = generate(args.items, args.users, args.events_per_user, args.seed)
    say(dataset.describe())
    version_dir = _trained(dataset, args)
    manifest = read_manifest(version_dir)
    _print_metrics(manifest)

    for name in SERVICES:
        port = DEFAULT_PORTS[name][0]
        if not _port_free(port):
            say(f"port {port} ({name}) is in use: stop the other server first")
            return 1
    logs = Path(args.artifacts) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name in SERVICES:
            port, metrics_port = DEFAULT_PORTS[name]
            cmd = serve_command(name, version_dir, port, metrics_port)
            log = (logs / f"{name}.log").open("wb")
            processes[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            say(
                f"started {name} (pid {processes[name].pid}) on 127.0.0.1:{port}, "
                f"metrics :{metrics_port}, log {logs / (name + '.log')}"
            )
        for name in SERVICES:
            _wait_serving(name, DEFAULT_PORTS[name][0], processes[name])
        _show_recommendations(version_dir)
        _print_next_steps()
        say(f"demo ready in {time.perf_counter() - started:.0f}s")
        if args.once:
            return 0
        say("serving; press Ctrl-C to stop")
        while True:
            signal.pause()  # until SIGINT or SIGTERM (both raise KeyboardInterrupt)
    except KeyboardInterrupt:
        return 0
    except RuntimeError as exc:  # a service failed to start: say which, show its log
        say(f"error: {exc}")
        for name in processes:
            log_file = logs / f"{name}.log"
            if processes[name].poll() not in (None, 0) and log_file.exists():
                print(f"--- last lines of {log_file} ---")
                print("\n".join(log_file.read_text().splitlines()[-15:]))
        return 1
    finally:
        _stop(processes)


def _trained(dataset, args: argparse.Namespace) -> Path:
    from pipeline.train import TrainingConfig, reusable_version, train_all

    if not args.retrain and (version_dir := reusable_version(args.artifacts, dataset)):
        say(f"reusing trained artifacts {version_dir} (same data; --retrain to redo)")
        return version_dir

    say("training tag model, two-tower retrieval + FAISS index, ranker")
    return train_all(
        dataset,
        Path(args.artifacts),
        TrainingConfig(),
        progress=lambda line: print(f"  {line}", flush=True),
    )


def _print_metrics(manifest: dict) -> None:
    m = manifest["metrics"]
    say(f"artifact version {manifest['version']} (held-out, leave-last-out):")
    pop = m["baselines"]["popularity"]
    print(
        f"  retrieval          recall@50 {m['retrieval']['recall@50']:.3f}  "
        f"ndcg@10 {m['retrieval']['ndcg@10']:.3f}   (popularity: recall@50 "
        f"{pop['recall@50']:.3f}, ndcg@10 {pop['ndcg@10']:.3f})"
    )
    print(
        f"  retrieval+ranking  recall@50 {m['ranking']['recall@50']:.3f}  "
        f"ndcg@10 {m['ranking']['ndcg@10']:.3f}"
    )
    t = m["tagging"]
    print(
        f"  tagging            micro-F1 {t['micro_f1']:.3f}  "
        f"(most-frequent-tags baseline {t['baseline_micro_f1']:.3f})"
    )


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _wait_serving(name: str, port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with code {process.returncode}; see its log")
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    say(f"{name} is SERVING")
                    return
            except grpc.RpcError:
                pass
            # Wait on the server's readiness, not a fixed sleep: WatchHealth would need a
            # stream per service, a bounded poll is simpler here.
            time.sleep(0.2)
    raise RuntimeError(f"{name} not SERVING after {READY_TIMEOUT_S:.0f}s")


def _show_recommendations(version_dir: Path) -> None:
    users = UserHistoryStore.load(version_dir / "users")
    known = users.user_ids()[:3]
    with grpc.insecure_channel(f"127.0.0.1:{DEFAULT_PORTS['gateway'][0]}") as channel:
        stub = gateway_pb2_grpc.RecommendationServiceStub(channel)
        for user in [*known, "new-visitor-42"]:
            response = stub.Recommend(
                gateway_pb2.RecommendRequest(user_id=user, num_items=5), timeout=2.0
            )
            print(format_response(user, response), flush=True)


def format_response(user: str, response: gateway_pb2.RecommendResponse) -> str:
    flags = [
        name
        for name, on in (
            ("cold start", response.cold_start),
            ("ranking degraded", response.ranking_degraded),
            ("tagging degraded", response.tagging_degraded),
        )
        if on
    ]
    timings = ", ".join(f"{t.stage} {t.milliseconds:.1f} ms" for t in response.timings)
    interests = ", ".join(t.name for t in response.user_interest_tags)
    lines = [
        f"\nuser {user}" + (f"  [{', '.join(flags)}]" if flags else ""),
        f"  because you like: {interests or '-'}",
        f"  stages: {timings}",
    ]
    for rank, item in enumerate(response.items, 1):
        tags = ", ".join(f"{t.name} {t.confidence:.2f}" for t in item.tags)
        lines.append(
            f"  {rank:2d}. {item.item_id:>7d}  {item.score:7.3f}  {item.title[:48]:<48}"
            f"  [{item.category}]  {tags}"
        )
    return "\n".join(lines)


def _print_next_steps() -> None:
    port = DEFAULT_PORTS["gateway"][0]
    data = json.dumps({"user_id": "u000001", "num_items": 10})
    print(
        f"""
Load-test the gateway with ghz (reflection, no proto file needed):
  ghz --insecure --call recsys.v1.RecommendationService.Recommend \\
      -d '{data}' -c 8 -n 2000 127.0.0.1:{port}
or with the shipped descriptor set and call data:
  ghz --insecure --protoset protos/recsys.protoset \\
      --call recsys.v1.RecommendationService.Recommend \\
      -D bench/ghz/recommend.json -c 8 -n 2000 127.0.0.1:{port}
One call from the CLI:
  .venv/bin/recserve recommend --user u000001 --num-items 5
""",
        flush=True,
    )


def _stop(processes: dict[str, subprocess.Popen[bytes]]) -> None:
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for name, process in processes.items():
        try:
            code = process.wait(timeout=30)
            say(f"{name} stopped (exit {code})")
        except subprocess.TimeoutExpired:
            process.kill()
            say(f"{name} did not drain in 30s; killed")
