"""The CLI parses every command (a broken parser breaks every server start)."""

from __future__ import annotations

import pytest

from services.cli import build_parser


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "retrieval", "--port", "0", "--admin-port", "0"],
        ["serve", "ranking"],
        ["serve", "tagging"],
        ["serve", "gateway", "--retrieval-addr", "dns:///retrieval:50052"],
        ["train", "--dataset", "movielens", "--data", "x", "--epochs", "1"],
        ["eval", "--dataset", "fashion", "--data", "x", "--baselines", "popularity"],
        ["demo", "--once"],
        ["recommend", "--user", "u1"],
        ["data", "--out", "x"],
    ],
)
def test_commands_parse(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert args.command == argv[0]
    if args.command == "serve":  # every option make_app and serve read is defined
        from services.commands import make_app

        make_app(args)
        for option in (
            "host",
            "port",
            "metrics_port",
            "admin_port",
            "grace",
            "threads",
            "workers",
            "artifacts",
            "log_level",
        ):
            assert hasattr(args, option), option


def test_environment_variables_set_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSERVE_METRICS_PORT", "9999")
    monkeypatch.setenv("RECSERVE_RETRIEVAL_ADDR", "retrieval:1")
    args = build_parser().parse_args(["serve", "gateway"])
    assert args.metrics_port == 9999
    assert args.retrieval_addr == "retrieval:1"
