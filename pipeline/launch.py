"""The ``lora-pipeline`` command's first step: from here on a SIGTERM is an orderly stop.

Until a pass installs its own handlers (and after it removes them), SIGTERM would end the
process by the system's default, with no word and no exit code of ours. It is caught here,
before the rest of the program is even imported, and turned into exit 143 and one line.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from types import FrameType

EXIT_SIGTERM = 143


class Terminated(BaseException):
    """SIGTERM arrived outside a pass (while starting, or after it ended)."""


def _terminate(_signum: int, _frame: FrameType | None) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    try:
        from .cli import main as run_command

        return run_command(argv)
    except Terminated:
        sys.stderr.write("lora-pipeline: stopped by SIGTERM outside a pass; nothing was lost\n")
        return EXIT_SIGTERM
