"""`recserve`: data, training, serving each service, a client call, and the demo.

Every `serve` flag, and the data set, index and synthetic-data flags of train, eval and
demo, also read an environment variable, RECSERVE_<FLAG> (e.g. --metrics-port ←
RECSERVE_METRICS_PORT; on/off flags take 1/true/yes/on), so a Kubernetes Deployment
configures a server with env alone. `recommend --addr` reads RECSERVE_GATEWAY_ADDR.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import sys
from pathlib import Path
from typing import Any


def env(flag: str, default: Any) -> Any:
    value = os.environ.get("RECSERVE_" + flag.upper().replace("-", "_"))
    if value is None:
        return default
    return type(default)(value) if default is not None else value


LOG_LEVELS = ["debug", "info", "warning", "error", "critical"]


def env_choice(flag: str, default: str, choices: list[str]) -> str:
    """The default of a flag with choices from RECSERVE_<FLAG>, checked (argparse checks
    only what is given on the command line)."""
    value = str(env(flag, default)).lower()
    if value not in choices:
        variable = "RECSERVE_" + flag.upper().replace("-", "_")
        raise SystemExit(f"recserve: {variable}={value!r}: choose from {', '.join(choices)}")
    return value


def env_flag(flag: str) -> bool:
    """The default of an on/off (store_true) flag from RECSERVE_<FLAG>."""
    value = os.environ.get("RECSERVE_" + flag.upper().replace("-", "_"), "")
    return value.strip().lower() in ("1", "true", "yes", "on")


def _no_default(action: argparse.Action) -> bool:
    # Identity, not `in (None, False)`: 0 == False, and a default of 0 or 0.0 is shown.
    return action.default is None or action.default is False


class _HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """`--help` shows every flag's default, also for flags without a help text (none for
    defaults None and False: those help texts say what leaving the flag out means)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if _no_default(action):
            return action.help
        return super()._get_help_string(action)

    def _format_action(self, action: argparse.Action) -> str:
        if (
            action.help is None
            and action.option_strings
            and not _no_default(action)
            and action.default is not argparse.SUPPRESS
        ):
            action = copy.copy(action)
            action.help = "(default: %(default)s)"
        return super()._format_action(action)


def _add_server_flags(p: argparse.ArgumentParser, port: int, metrics_port: int) -> None:
    p.add_argument(
        "--artifacts",
        default=env("artifacts", "artifacts"),
        help="artifact root (holding LATEST) or one version directory",
    )
    p.add_argument(
        "--host", default=env("host", "127.0.0.1"), help="bind address (0.0.0.0 in containers)"
    )
    p.add_argument("--port", type=int, default=env("port", port))
    p.add_argument(
        "--metrics-port",
        type=int,
        default=env("metrics_port", metrics_port),
        help="Prometheus /metrics port; -1 disables",
    )
    p.add_argument(
        "--reuse-port",
        action="store_true",
        default=env_flag("reuse_port"),
        help="SO_REUSEPORT: let several processes of this service share --port",
    )
    p.add_argument(
        "--max-concurrent-rpcs",
        type=int,
        default=env("max_concurrent_rpcs", 1000),
        help="calls handled at once; beyond it RESOURCE_EXHAUSTED",
    )
    p.add_argument(
        "--admin-port",
        type=int,
        default=env("admin_port", -1),
        help="operator RPCs (ModelAdminService, CatalogService): -1 off, 0 on --port, "
        ">0 their own port",
    )
    p.add_argument(
        "--grace",
        type=float,
        default=env("grace", 10.0),
        help="seconds to drain in-flight requests on SIGTERM",
    )
    p.add_argument(
        "--drain-delay",
        type=float,
        default=env("drain_delay", 0.0),
        help="seconds on SIGTERM between reporting NOT_SERVING and refusing new calls, for "
        "load balancers that poll health (before --grace starts)",
    )
    p.add_argument(
        "--otlp-endpoint",
        default=env("otlp_endpoint", os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")),
        help="OpenTelemetry collector (OTLP/gRPC, e.g. http://127.0.0.1:4317; also read from "
        "OTEL_EXPORTER_OTLP_ENDPOINT): a span per call, traces continued across services; "
        "empty: tracing off",
    )
    p.add_argument(
        "--log-level",
        default=env_choice("log_level", "info", LOG_LEVELS),
        type=str.lower,
        choices=LOG_LEVELS,
    )


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    """The compute flags of a service that runs a model (not the gateway)."""
    p.add_argument(
        "--threads", type=int, default=env("threads", 1), help="torch/FAISS threads per call"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=env("workers", 2),
        help="concurrent model calls (thread pool)",
    )


DEFAULT_PORTS = {
    "gateway": (50051, 9101),
    "retrieval": (50052, 9102),
    "ranking": (50053, 9103),
    "tagging": (50054, 9104),
}


def serve_command(
    name: str, artifacts: Path, port: int, metrics_port: int, *extra: str
) -> list[str]:
    """The command line that runs one service as its own process (demo, benchmarks)."""
    return [
        sys.executable,
        "-m",
        "services.cli",
        "serve",
        name,
        "--artifacts",
        str(artifacts),
        "--port",
        str(port),
        "--metrics-port",
        str(metrics_port),
        *extra,
    ]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recserve", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser(
        "data", help="write the synthetic data set as Parquet", formatter_class=_HelpWithDefaults
    )
    data.add_argument("--out", type=Path, required=True)
    _add_synthetic_flags(data)

    train = sub.add_parser(
        "train",
        help="train all models and publish an artifact version",
        formatter_class=_HelpWithDefaults,
    )
    train.add_argument("--artifacts", type=Path, default=Path(env("artifacts", "artifacts")))
    _add_dataset_flags(train)
    train.add_argument(
        "--tag-encoder",
        choices=["fast", "minilm"],
        default=env("tag_encoder", "fast"),
        help="tag model: hashed n-grams (fast) or frozen all-MiniLM-L6-v2 + head (minilm)",
    )

    serve = sub.add_parser("serve", help="run one service until SIGTERM")
    serve_sub = serve.add_subparsers(dest="service", required=True)
    for name, (port, metrics_port) in DEFAULT_PORTS.items():
        p = serve_sub.add_parser(
            name, help=f"the {name} service", formatter_class=_HelpWithDefaults
        )
        _add_server_flags(p, port, metrics_port)
        if name != "gateway":
            _add_model_flags(p)
        if name == "retrieval":
            p.add_argument(
                "--device",
                default=env("device", "auto"),
                choices=["auto", "cpu", "gpu"],
                help="FAISS index placement",
            )
            p.add_argument(
                "--gpu-shard",
                action="store_true",
                default=env_flag("gpu_shard"),
                help="with several GPUs, split the index across them (default: replicate)",
            )
            p.add_argument("--max-k", type=int, default=env("max_k", 1000))
            p.add_argument(
                "--batching",
                choices=["on", "off"],
                default=env("batching", "on"),
                help="micro-batch concurrent Retrieve calls",
            )
            p.add_argument(
                "--recall-floor",
                type=float,
                default=env("recall_floor", 0.9),
                help="refuse an index whose measured recall@K is below this",
            )
            p.add_argument(
                "--force-index",
                action="store_true",
                default=env_flag("force_index"),
                help="serve an index below the recall floor anyway",
            )
            p.add_argument(
                "--max-live-items",
                type=int,
                default=env("max_live_items", 100_000),
                help="items CatalogService may add or change before a retrain is needed",
            )
        if name == "ranking":
            p.add_argument(
                "--device",
                default=env("device", "auto"),
                choices=["auto", "cpu", "cuda", "gpu"],
                help="where the ranker runs: auto = CUDA when torch sees a GPU (gpu = cuda)",
            )
            p.add_argument(
                "--batching",
                choices=["on", "off"],
                default=env("batching", "on"),
                help="micro-batch concurrent Rank calls into one forward pass "
                "(measured in docs/benchmarks.md)",
            )
            p.add_argument(
                "--batch-max", type=int, default=env("batch_max", 32), help="calls per batch"
            )
            p.add_argument(
                "--batch-wait-ms",
                type=float,
                default=env("batch_wait_ms", 2.0),
                help="longest a call waits for company (only while a batch is running)",
            )
        if name in ("retrieval", "ranking"):
            p.add_argument(
                "--inline-lone-calls",
                choices=["on", "off"],
                default=env("inline_lone_calls", "on"),
                help="with batching on, compute a call that arrives while the service is idle "
                "on the event-loop thread instead of the executor (saves a thread round trip; "
                "measured in docs/benchmarks.md)",
            )
        if name == "tagging":
            p.add_argument(
                "--batching",
                choices=["on", "off"],
                default=env("batching", "on"),
                help="micro-batch concurrent GenerateTags calls",
            )
        if name == "gateway":
            p.add_argument("--retrieval-addr", default=env("retrieval_addr", "127.0.0.1:50052"))
            p.add_argument("--ranking-addr", default=env("ranking_addr", "127.0.0.1:50053"))
            p.add_argument("--tagging-addr", default=env("tagging_addr", "127.0.0.1:50054"))
            p.add_argument(
                "--candidates",
                type=int,
                default=env("candidates", 200),
                help="K asked of retrieval",
            )
            p.add_argument("--max-items", type=int, default=env("max_items", 100))
            p.add_argument(
                "--default-deadline",
                type=float,
                default=env("default_deadline", 1.0),
                help="seconds, when the client sends no deadline",
            )

    evaluate = sub.add_parser(
        "eval",
        help="held-out evaluation: our pipeline and tagger against baselines",
        formatter_class=_HelpWithDefaults,
    )
    evaluate.add_argument(
        "--artifacts",
        type=Path,
        default=Path(env("artifacts", "artifacts")),
        help="reused when trained on the same data, else trained here",
    )
    _add_dataset_flags(evaluate)
    evaluate.add_argument("--baselines", nargs="*", default=["popularity", "cooccurrence", "als"])
    evaluate.add_argument(
        "--max-users",
        type=int,
        default=None,
        help="evaluate a seeded sample of users (default: all)",
    )
    evaluate.add_argument("--retrain", action="store_true")
    evaluate.add_argument("--report", type=Path, default=None, help="write the results as JSON")
    evaluate.add_argument("--skip-tags", action="store_true")
    evaluate.add_argument(
        "--target",
        choices=["test", "validation"],
        default=env("target", "test"),
        help="held-out target: test (last event; the reported numbers) or validation "
        "(second-to-last, histories = training events only; for choosing model variants)",
    )
    evaluate.add_argument(
        "--tag-encoder",
        choices=["fast", "minilm", "all"],
        default=env("tag_encoder", "all"),
        help="tag encoders to evaluate (all: both); the artifact's is fast unless one is named",
    )

    rec = sub.add_parser(
        "recommend", help="call the gateway and print the answer", formatter_class=_HelpWithDefaults
    )
    rec.add_argument("--addr", default=env("gateway_addr", "127.0.0.1:50051"))
    rec.add_argument("--user", required=True)
    rec.add_argument("--num-items", type=int, default=10)
    rec.add_argument("--recent", type=int, nargs="*", default=[])
    rec.add_argument("--timeout", type=float, default=2.0)

    demo = sub.add_parser(
        "demo",
        help="data → training → four services → recommendations",
        formatter_class=_HelpWithDefaults,
    )
    demo.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    demo.add_argument("--once", action="store_true", help="stop the services and exit 0")
    demo.add_argument(
        "--retrain",
        action="store_true",
        help="train even when artifacts for this data already exist",
    )
    _add_synthetic_flags(demo)
    return parser


DATASET_NAMES = ["synthetic", "movielens", "fashion", "online-retail", "generic"]


def _add_dataset_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset",
        default=env("dataset", "synthetic"),
        choices=DATASET_NAMES,
        help="synthetic (generated) or a loader for files under --data",
    )
    p.add_argument(
        "--data",
        type=Path,
        default=env("data", None),
        help="folder or file of the real data set (see docs/data.md)",
    )
    _add_synthetic_flags(p)
    p.add_argument(
        "--index-kind",
        choices=["flat", "ivf", "hnsw"],
        default=env("index_kind", "flat"),
        help="FAISS index: exact flat (default), IVF or HNSW",
    )
    p.add_argument("--nlist", type=int, default=env("nlist", 1024), help="IVF lists")
    p.add_argument("--nprobe", type=int, default=env("nprobe", 32), help="IVF lists searched")
    p.add_argument("--hnsw-m", type=int, default=env("hnsw_m", 32))
    p.add_argument("--ef-search", type=int, default=env("ef_search", 128))
    p.add_argument(
        "--epochs", type=int, default=None, help="override every model's epoch count (quick runs)"
    )


def _add_synthetic_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--items", type=int, default=env("items", 5000))
    p.add_argument("--users", type=int, default=env("users", 2000))
    p.add_argument("--events-per-user", type=int, default=env("events_per_user", 30))
    p.add_argument("--seed", type=int, default=env("seed", 0))


def main(argv: list[str] | None = None) -> int:
    # Before anything loads FAISS: the OpenBLAS bundled with it misdetects recent CPUs and
    # falls back to slow kernels (docs/benchmarks.md); a deployment's own setting wins.
    from services.batching import openblas_coretype_for_cpu

    coretype = openblas_coretype_for_cpu()
    if coretype:
        os.environ.setdefault("OPENBLAS_CORETYPE", coretype)
    args = build_parser().parse_args(argv)
    if args.command == "data":
        from services.commands import write_data

        return write_data(args)
    if args.command == "train":
        from services.commands import train

        return train(args)
    if args.command == "serve":
        from services.commands import serve

        return asyncio.run(serve(args))
    if args.command == "eval":
        from services.commands import evaluate

        return evaluate(args)
    if args.command == "recommend":
        from services.commands import recommend

        return recommend(args)
    if args.command == "demo":
        from services.demo import run_demo

        return run_demo(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
