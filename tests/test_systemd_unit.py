"""jobs/lora-pipeline-watch@.service: the example unit says what the pipeline needs."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

from pipeline.cli.commands import build_parser
from pipeline.config import Settings
from pipeline.views.summary import EXIT_BAD_CREDENTIALS, EXIT_SIGTERM, EXIT_USAGE

UNIT = Path(__file__).parents[1] / "jobs" / "lora-pipeline-watch@.service"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case
    parser.read_string(UNIT.read_text(encoding="utf-8"))
    return parser


def seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "min": 60, "m": 60, "h": 3600}
    for suffix, factor in sorted(units.items(), key=lambda item: -len(item[0])):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


def test_it_runs_watch_for_the_instance_job() -> None:
    service = unit()["Service"]
    assert service["Type"] == "simple"
    command = shlex.split(service["ExecStart"])
    assert command[0].endswith("/.venv/bin/lora-pipeline")
    args = build_parser().parse_args(command[1:])
    assert args.command == "watch" and str(args.job) == "jobs/%i.toml"
    assert service["WorkingDirectory"].startswith("/")
    assert service["EnvironmentFile"].lstrip("-").endswith("/config.env")


def test_a_stop_outlasts_the_grace_and_is_a_success() -> None:
    service = unit()["Service"]
    grace = Settings.model_fields["stop_grace_seconds"].default
    assert service["KillSignal"] == "SIGTERM"
    assert seconds(service["TimeoutStopSec"]) > 2 * grace
    assert str(EXIT_SIGTERM) in service["SuccessExitStatus"].split()


def test_it_restarts_on_failure_but_not_on_what_a_restart_cannot_fix() -> None:
    service = unit()["Service"]
    assert service["Restart"] == "on-failure"
    assert seconds(service["RestartSec"]) > 0
    prevented = service["RestartPreventExitStatus"].split()
    assert {str(EXIT_USAGE), str(EXIT_BAD_CREDENTIALS)} <= set(prevented)
    assert str(EXIT_SIGTERM) not in prevented


def test_it_is_hardened_and_holds_no_secret() -> None:
    service = unit()["Service"]
    assert service["NoNewPrivileges"] == "yes" and service["PrivateTmp"] == "yes"
    assert "User" in service
    assert "Environment" not in service  # settings, the key above all, stay in config.env
    lines = UNIT.read_text(encoding="utf-8").splitlines()
    assert not [line for line in lines if "LORA_" in line and not line.startswith("#")]
