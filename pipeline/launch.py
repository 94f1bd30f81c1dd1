# PYTHON_ARGCOMPLETE_OK  (argcomplete: this entry point completes its own arguments)
"""The ``lora-pipeline`` command's first step: from here on a SIGTERM is an orderly stop.

Until a pass installs its own handlers (and after it removes them), SIGTERM would end the
process by the system's default, with no word and no exit code of ours. It is caught here,
before the rest of the program is even imported, and turned into exit 143 and one line.
A reader that closes our stdout early (`status JOB | head -1`) ends it quietly, with 0.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType

EXIT_OK = 0
EXIT_SIGTERM = 143


class Terminated(BaseException):
    """SIGTERM arrived outside a pass (while starting, or after it ended)."""


def _terminate(_signum: int, _frame: FrameType | None) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    try:
        from .cli import main as run_command

        code = run_command(argv)
        sys.stdout.flush()  # a closed pipe shows here, not as a warning at exit
        return code
    except BrokenPipeError:
        # The reader went away (`status JOB | head -1`): not an error. As CPython's docs
        # advise, point stdout at devnull so the flush at exit does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except Terminated:
        sys.stderr.write("lora-pipeline: stopped by SIGTERM outside a pass; nothing was lost\n")
        return EXIT_SIGTERM
