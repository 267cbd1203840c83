"""Tag generation throughput (items/s) for both encoders: in-process vs. the gRPC service.

Trains two small catalogue-only artifacts on the synthetic catalogue (fast and MiniLM
encoders; or reuses --fast/--minilm artifact directories), then measures

  * in-process: `Tagger.predict` on batches of 1, 8 and 32 product texts;
  * the real service: `recserve serve tagging` as its own process on loopback, GenerateTags
    with one product per call at several client concurrencies, micro-batching off and on.

Not a test: it prints figures with their conditions.

    .venv/bin/python -m bench.tagging_throughput
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path

import torch
from grpc import aio

from bench.common import drive, start_service
from pipeline.train import TrainingConfig, train_all
from recdata.artifacts import resolve
from recdata.schema import Dataset
from recdata.synthetic import generate
from recsys.v1 import tagging_pb2, tagging_pb2_grpc
from tagging.tagger import Tagger
from tagging.text import product_text


def train_artifact(encoder: str, items: int, root: Path) -> Path:
    full = generate(num_items=items, num_users=10, seed=0)
    dataset = Dataset("synthetic-catalogue", full.items, full.interactions.iloc[:0])
    config = TrainingConfig()
    config.tagger = dataclasses.replace(config.tagger, encoder=encoder)
    started = time.perf_counter()
    version = train_all(dataset, root / encoder, config, lambda _line: None)
    print(f"# trained {encoder} tagger in {time.perf_counter() - started:.0f}s", flush=True)
    return version


def products(n: int) -> list[tagging_pb2.ProductText]:
    """Held-out product texts: another seed's catalogue, so no text was seen in training."""
    items = generate(num_items=n, num_users=10, seed=99).items
    return [
        tagging_pb2.ProductText(title=t, description=d, category=c)
        for t, d, c in zip(items["title"], items["description"], items["category"], strict=True)
    ]


def in_process(version_dir: Path, texts: list[str], batch: int, calls: int) -> float:
    tagger = Tagger.load(version_dir / "tagging")
    tagger.predict(texts[:batch])  # warm up
    started = time.perf_counter()
    for i in range(calls):
        start = (i * batch) % (len(texts) - batch)
        tagger.predict(texts[start : start + batch])
    return calls * batch / (time.perf_counter() - started)


def start_tagging(version_dir: Path, batching: str) -> tuple[int, subprocess.Popen]:
    return start_service("tagging", version_dir, "--batching", batching, "--threads", "1")


async def service_cells(
    port: int, items: list[tagging_pb2.ProductText], requests: int, concurrencies: list[int]
) -> list[tuple[int, float, float, float]]:
    rows = []
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = tagging_pb2_grpc.TaggingServiceStub(channel)

        def call(i: int) -> Awaitable[object]:
            request = tagging_pb2.GenerateTagsRequest(items=[items[i % len(items)]], max_tags=5)
            return stub.GenerateTags(request, timeout=30)

        for c in concurrencies:
            p50, p99, rps = await drive(call, requests, c)
            rows.append((c, p50, p99, rps))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000, help="training catalogue size")
    parser.add_argument("--fast", type=Path, help="reuse this artifact (root or version)")
    parser.add_argument("--minilm", type=Path, help="reuse this artifact (root or version)")
    parser.add_argument("--encoders", nargs="+", default=["fast", "minilm"])
    parser.add_argument("--requests", type=int, default=300, help="calls per service cell")
    parser.add_argument("--calls", type=int, default=100, help="in-process calls per cell")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--batching", nargs="+", default=["off", "on"], choices=["on", "off"])
    args = parser.parse_args()

    torch.set_num_threads(1)  # as the service runs (--threads 1)
    items = products(1000)
    texts = [product_text(p.title, p.description, p.category) for p in items]
    versions: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="tagbench-") as tmp:
        for encoder in args.encoders:
            given = getattr(args, encoder)
            versions[encoder] = (
                resolve(given) if given else train_artifact(encoder, args.items, Path(tmp))
            )
        local_rows, service_rows = [], []
        for encoder, version_dir in versions.items():
            for batch in (1, 8, 32):
                local_rows.append(
                    (encoder, batch, in_process(version_dir, texts, batch, args.calls))
                )
            for mode in args.batching:
                port, proc = start_tagging(version_dir, mode)
                try:
                    cells = asyncio.run(service_cells(port, items, args.requests, args.concurrency))
                finally:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=60)
                service_rows += [(encoder, mode, *cell) for cell in cells]

    print(
        f"# conditions: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, torch {torch.__version__} threads 1; "
        f"taggers trained on {args.items} synthetic items; product texts from another seed's "
        f"catalogue (mean {statistics.mean(len(t) for t in texts):.0f} chars); service: its "
        f"own process, --workers 2 --threads 1, client in this process over loopback, "
        f"{args.requests} GenerateTags calls of one product per cell after 20 warm-up calls"
    )
    print("\n| encoder | in-process batch | items/s |")
    print("|---|---|---|")
    for encoder, batch, rate in local_rows:
        print(f"| {encoder} | {batch} | {rate:.0f} |")
    print("\n| encoder | service batching | concurrency | p50 ms | p99 ms | items/s |")
    print("|---|---|---|---|---|---|")
    for encoder, mode, c, p50, p99, rps in service_rows:
        print(f"| {encoder} | {mode} | {c} | {p50:.2f} | {p99:.2f} | {rps:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
