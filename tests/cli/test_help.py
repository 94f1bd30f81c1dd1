"""``--help``: for people, every command and option with a line that says what it is."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from pipeline.cli.commands import main
from pipeline.cli.parser import build_parser


def _parsers(
    parser: argparse.ArgumentParser, name: str = "lora-pipeline"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {command}")


def test_every_command_and_option_has_a_help_line() -> None:
    walked = list(_parsers(build_parser()))
    assert len(walked) > 10
    for name, parser in walked:
        assert (parser.description or "").strip(), f"{name}: no description"
        for action in parser._actions:
            text = action.help
            assert text and text is not argparse.SUPPRESS and text.strip(), (
                f"{name} {'/'.join(action.option_strings) or action.dest}: no help"
            )


def test_the_top_help_is_for_users(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "Exit codes:" in out and "init" in out and "--quiet" in out
    assert "``" not in out and "map errors to exit codes" not in out  # no docstring
