"""Shell completion (argcomplete): the shell asks the command itself, on file descriptor 8."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _complete(line: str) -> set[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORA_")}
    env.update(_ARGCOMPLETE="1", COMP_LINE=line, COMP_POINT=str(len(line)),
               _ARGCOMPLETE_IFS="\n")
    # argcomplete answers on descriptor 8, as the shell's hook expects: make it our stdout.
    done = subprocess.run(
        ["bash", "-c", 'exec "$0" -m pipeline 8>&1 >/dev/null', sys.executable],
        env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )
    words = done.stdout
    assert done.returncode == 0, done.stderr
    return {word.strip() for word in words.split("\n") if word.strip()}


@pytest.mark.parametrize(("line", "expected"), [
    ("lora-pipeline st", {"status"}),
    ("lora-pipeline run --max", {"--max-wait"}),
    ("lora-pipeline status --j", {"--json"}),
])
def test_the_shell_completes_commands_and_options(line: str, expected: set[str]) -> None:
    assert _complete(line) == expected
