"""The CLI's commands (kept apart from argument parsing so `--help` stays fast)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import grpc

from pipeline.train import TrainingConfig, train_all
from recdata.artifacts import ArtifactError
from recdata.errors import DataError
from recdata.schema import Dataset
from recdata.synthetic import generate
from retrieval.index import HNSWConfig, IndexConfig, IVFConfig
from services.errors import FailedPrecondition
from services.executor import set_compute_threads
from services.logs import configure_logging
from services.runtime import ModelServer, ServerOptions, ServiceApp, serve_until_signal
from services.tracing import Tracing, tracing_to_otlp

logger = logging.getLogger(__name__)


def synthetic_data(args: argparse.Namespace) -> Dataset:
    """The synthetic set of the command's sizes; sizes it cannot generate end the command
    with one line naming the limit."""
    try:
        return generate(args.items, args.users, args.events_per_user, args.seed)
    except DataError as exc:
        raise SystemExit(f"recserve {args.command}: {exc}") from None


def write_data(args: argparse.Namespace) -> int:
    ds = synthetic_data(args)
    args.out.mkdir(parents=True, exist_ok=True)
    ds.items.to_parquet(args.out / "items.parquet", index=False)
    ds.interactions.to_parquet(args.out / "interactions.parquet", index=False)
    print(f"wrote {ds.describe()} to {args.out}")
    return 0


def load_data(args: argparse.Namespace) -> Dataset:
    """The synthetic set, or a real one through its loader (bad rows reported, not fatal)."""
    if args.dataset == "synthetic":
        return synthetic_data(args)
    if args.data is None:
        raise SystemExit(f"--dataset {args.dataset} needs --data PATH (see docs/data.md)")
    from recdata.loaders import load_dataset

    try:
        dataset, report = load_dataset(args.dataset, args.data)
    except (DataError, FileNotFoundError) as exc:  # the user's files: say what, no traceback
        raise SystemExit(f"recserve {args.command}: {exc}") from None
    print(report.summary(), flush=True)
    return dataset


def training_config(args: argparse.Namespace) -> TrainingConfig:
    config = TrainingConfig.for_dataset(args.dataset)
    config.index = IndexConfig(
        kind=args.index_kind,
        ivf=IVFConfig(nlist=args.nlist, nprobe=min(args.nprobe, args.nlist)),
        hnsw=HNSWConfig(m=args.hnsw_m, ef_search=args.ef_search),
    )
    if args.epochs is not None:
        config.tagger.epochs = config.two_tower.epochs = config.ranker.epochs = args.epochs
    if getattr(args, "tag_encoder", "all") != "all":
        config.tagger.encoder = args.tag_encoder
    return config


def _progress(line: str) -> None:
    print(line, flush=True)


def train(args: argparse.Namespace) -> int:
    dataset = load_data(args)
    try:
        train_all(dataset, Path(args.artifacts), training_config(args), _progress)
    except DataError as exc:  # too little data for a stage: say which, no traceback
        raise SystemExit(f"recserve train: {exc}") from None
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from evaluation.report import run_evaluation

    dataset = load_data(args)
    try:
        result = run_evaluation(
            dataset,
            Path(args.artifacts),
            training_config(args),
            baselines=args.baselines,
            max_users=args.max_users,
            retrain=args.retrain,
            tags=not args.skip_tags,
            progress=_progress,
            tag_encoders=["fast", "minilm"] if args.tag_encoder == "all" else [args.tag_encoder],
            target=args.target,
        )
    except DataError as exc:  # too little data for a stage it trains: one line
        raise SystemExit(f"recserve eval: {exc}") from None
    print(result.markdown())
    if args.report:
        args.report.write_text(json.dumps(result.to_dict(), indent=2))
        print(f"wrote {args.report}")
    return 0


def make_app(args: argparse.Namespace, tracing: Tracing | None = None) -> ServiceApp:
    """The service `args` names, configured from its flags; `tracing` (the gateway's) is
    passed on to its downstream calls."""
    artifacts = Path(args.artifacts)
    if args.service == "retrieval":
        from services.retrieval_service import RetrievalApp, RetrievalConfig

        return RetrievalApp(
            RetrievalConfig(
                artifacts,
                max_k=args.max_k,
                device=args.device,
                gpu_shard=args.gpu_shard,
                workers=args.workers,
                batching=args.batching == "on",
                inline_lone_calls=args.inline_lone_calls == "on",
                recall_floor=args.recall_floor,
                force_index=args.force_index,
                max_live_items=args.max_live_items,
            )
        )
    if args.service == "ranking":
        from services.ranking_service import RankingApp, RankingConfig

        return RankingApp(RankingConfig.from_args(artifacts, args))
    if args.service == "tagging":
        from services.tagging_service import TaggingApp, TaggingConfig

        return TaggingApp(
            TaggingConfig(artifacts, workers=args.workers, batching=args.batching == "on")
        )
    from services.gateway_service import GatewayApp, GatewayConfig

    return GatewayApp(
        GatewayConfig(
            artifacts,
            args.retrieval_addr,
            args.ranking_addr,
            args.tagging_addr,
            candidates=args.candidates,
            max_items=args.max_items,
            default_deadline_s=args.default_deadline,
        ),
        tracing,
    )


async def serve(args: argparse.Namespace) -> int:
    configure_logging(args.service, args.log_level)
    if args.service != "gateway":  # the gateway runs no model
        set_compute_threads(args.threads)
    tracing = tracing_to_otlp(args.otlp_endpoint, args.service) if args.otlp_endpoint else None
    server = ModelServer(
        make_app(args, tracing),
        ServerOptions(
            host=args.host,
            port=args.port,
            metrics_port=args.metrics_port,
            grace_seconds=args.grace,
            drain_delay_seconds=args.drain_delay,
            admin_port=args.admin_port,
            reuse_port=args.reuse_port,
            max_concurrent_rpcs=args.max_concurrent_rpcs,
            tracing=tracing,
        ),
    )
    try:
        await serve_until_signal(server)
    except (ArtifactError, FailedPrecondition) as exc:  # an operator's mistake: say it plainly
        logger.error("cannot serve: %s", exc)
        return 2
    except Exception:
        logger.exception("server failed")
        return 1
    return 0


def recommend(args: argparse.Namespace) -> int:
    from recsys.v1 import gateway_pb2, gateway_pb2_grpc

    with grpc.insecure_channel(args.addr) as channel:
        stub = gateway_pb2_grpc.RecommendationServiceStub(channel)
        try:
            response = stub.Recommend(
                gateway_pb2.RecommendRequest(
                    user_id=args.user, num_items=args.num_items, recent_item_ids=args.recent
                ),
                timeout=args.timeout,
            )
        except grpc.RpcError as err:
            print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    from services.demo import format_response

    print(format_response(args.user, response))
    return 0
