"""The CLI parses every command (a broken parser breaks every server start)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recdata.artifacts import resolve
from services.cli import build_parser, main


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
        options = ["host", "port", "metrics_port", "admin_port", "grace", "artifacts", "log_level"]
        if args.service != "gateway":  # the gateway runs no model: no compute flags
            options += ["threads", "workers"]
        for option in options:
            assert hasattr(args, option), option


def test_environment_variables_set_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSERVE_METRICS_PORT", "9999")
    monkeypatch.setenv("RECSERVE_RETRIEVAL_ADDR", "retrieval:1")
    args = build_parser().parse_args(["serve", "gateway"])
    assert args.metrics_port == 9999
    assert args.retrieval_addr == "retrieval:1"


def test_gateway_has_no_model_flags() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "gateway", "--workers", "4"])


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), ("TRUE", True), ("on", True), ("0", False), ("no", False), ("", False)],
)
def test_on_off_flags_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    monkeypatch.setenv("RECSERVE_FORCE_INDEX", value)
    assert build_parser().parse_args(["serve", "retrieval"]).force_index is expected


def test_log_level_is_case_insensitive() -> None:
    assert build_parser().parse_args(["serve", "ranking", "--log-level", "DEBUG"]).log_level == (
        "debug"
    )
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "ranking", "--log-level", "loud"])


def test_help_shows_every_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "gateway", "--help"])
    shown = capsys.readouterr().out
    for default in ("(default: 50051)", "(default: 127.0.0.1:50052)", "(default: 100)"):
        assert default in shown, default
    assert "(default: 0.0)" in shown  # --drain-delay: a zero default is a default too


def test_tracing_endpoint_from_flag_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_parser().parse_args(["serve", "ranking"]).otlp_endpoint == ""  # off
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    assert build_parser().parse_args(["serve", "gateway"]).otlp_endpoint == "http://collector:4317"
    monkeypatch.setenv("RECSERVE_OTLP_ENDPOINT", "http://ours:4317")  # ours wins
    assert build_parser().parse_args(["serve", "tagging"]).otlp_endpoint == "http://ours:4317"


def test_data_the_loader_cannot_read_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "online_retail_sample40k.csv").write_text("InvoiceNo,Quantity\n1,2\n")
    command = ["train", "--dataset", "online-retail", "--data", str(tmp_path)]
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--artifacts", str(tmp_path / "artifacts")])
    assert str(exit_.value.code).startswith("recserve train: ")
    assert "missing column(s) StockCode" in str(exit_.value.code)
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "--dataset", "movielens", "--data", str(tmp_path / "nowhere")])
    assert "ratings.csv, movies.csv not found" in str(exit_.value.code)


def test_too_little_data_to_train_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    """Sizes that load but leave a stage nothing to learn from end `recserve train` with
    one line naming the stage, and write no artifact version."""
    artifacts = tmp_path / "artifacts"
    small = ["--items", "30", "--users", "10", "--events-per-user", "5", "--epochs", "1"]
    with pytest.raises(SystemExit) as exit_:
        main(["train", *small, "--artifacts", str(artifacts)])
    assert str(exit_.value.code).startswith("recserve train: no ranking examples")
    assert not (artifacts / "LATEST").exists()
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--items", "8", "--artifacts", str(artifacts)])
    assert str(exit_.value.code) == (
        "recserve train: num_items must be at least 15 (one per category)"
    )
    with pytest.raises(SystemExit) as exit_:
        main(["data", "--seed", "-1", "--out", str(tmp_path / "data")])
    assert str(exit_.value.code) == "recserve data: seed must be non-negative, got -1"


def test_a_catalogue_smaller_than_the_candidate_list_trains(tmp_path: Path) -> None:
    """30 items, fewer than the 200 candidates retrieval hands ranking: the index is
    measured over the whole catalogue and a version is published."""
    small = ["--items", "30", "--users", "40", "--events-per-user", "12", "--epochs", "1"]
    assert main(["train", *small, "--artifacts", str(tmp_path)]) == 0
    manifest = json.loads((resolve(tmp_path) / "manifest.json").read_text())
    assert manifest["index"]["k"] == 30
