"""The command line's grammar: every command and option, each with a line of help."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import __version__
from ..views.metrics import DEFAULT_HOST as DEFAULT_METRICS_HOST

DEFAULT_MAX_WAIT = 240.0
DEFAULT_CONFIG = Path("config.env")
DESCRIPTION = """\
Folders of photos in, trained LoRAs and generated pictures out, on the hosted training API.
Results go to stdout; errors, warnings and logs to stderr. Start with `lora-pipeline init`."""
JOB_HELP = "the job file (TOML; see jobs/README.md)"
EXIT_CODES = """\
Exit codes:
    0   everything done, or still in flight (the next run goes on)
    2   bad usage, settings or job file; a state file that cannot be used as it is
    3   some input was rejected (the message names the files and why)
    4   a training or generation failed or was canceled
    5   the API key is missing or refused
    6   another run of the same job holds its lock
    7   the spend ceiling (max_spend) kept a paid request from being sent; raise it in the
        job file and the next pass goes on (a per-pass ceiling: the next pass goes on)
    8   not one API request of the pass was answered (connection refused or reset,
        timeouts, only server errors)
    130 stopped by SIGINT (Ctrl-C), 143 by SIGTERM; state is saved, the next run continues
"""


def _command(
    commands_: argparse._SubParsersAction[argparse.ArgumentParser], name: str, text: str
) -> argparse.ArgumentParser:
    """A command whose one line in the list is also the head of its own ``--help``."""
    return commands_.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")


def _quiet(parser: argparse.ArgumentParser, *, default: object = False) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", default=default,
                        help="print only errors and warnings (on stderr), for cron")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lora-pipeline", description=DESCRIPTION, epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lora-pipeline {__version__}",
                        help="print the version and exit")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help=f"settings file (default: {DEFAULT_CONFIG}, when there is one; "
                             "LORA_* variables in the environment win over it)")
    _quiet(parser)
    found = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                  help="one of:")

    run = _command(found, "run", "one pass for cron: advance every subject, then exit")
    run.add_argument("job", type=Path, help=JOB_HELP)
    run.add_argument("--max-wait", type=float, default=DEFAULT_MAX_WAIT, metavar="SECONDS",
                     help="seconds to wait for in-flight work before exiting (default 240)")
    _quiet(run, default=argparse.SUPPRESS)
    watch = _command(found, "watch", "run until stopped, reacting to the inbox")
    watch.add_argument("job", type=Path, help=JOB_HELP)
    _quiet(watch, default=argparse.SUPPRESS)
    watch.add_argument("--metrics-port", type=int, metavar="PORT",
                       help="serve Prometheus metrics at http://HOST:PORT/metrics")
    watch.add_argument("--metrics-host", default=DEFAULT_METRICS_HOST, metavar="HOST",
                       help=f"address for --metrics-port (default {DEFAULT_METRICS_HOST})")
    status = _command(found, "status", "where every subject of a job stands")
    status.add_argument("job", type=Path, help=JOB_HELP)
    status.add_argument("--json", action="store_true",
                        help="one JSON document with documented fields (see README)")
    report = _command(found, "report", "write outbox/<job>/report.html and report.json")
    report.add_argument("job", type=Path, help=JOB_HELP)
    for name, text in (("spend", "what was paid for, per subject (from the ledger)"),
                       ("plan", "what the next pass would do and pay for, paying nothing")):
        looks = _command(found, name, text)
        looks.add_argument("job", type=Path, help=JOB_HELP)
        looks.add_argument("--json", action="store_true", help="print the data as JSON")
    _validate_command(found)
    _request_commands(found)
    init = _command(found, "init", "write a job file, config.env and inbox/ to start from")
    init.add_argument("dir", type=Path, nargs="?", default=Path("."),
                      help="the folder to write them in (default: the current one)")
    demo = _command(found, "demo", "the whole flow on sample folders, offline")
    demo.add_argument("--workdir", type=Path, default=Path("demo"), metavar="DIR",
                      help="where the sample folders and results go (default: demo)")
    emulator = _command(found, "emulator", "serve the local stand-in of the API")
    from ..emulator import add_cli_arguments

    add_cli_arguments(emulator)
    return parser


def _validate_command(found: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    validate = _command(found, "validate", "check photo folders without the network")
    validate.add_argument("path", type=Path, help="a subject folder, an inbox, or a job file")
    validate.add_argument("--kind", choices=("subject", "style"), default="subject",
                          help="what the folders train, without a job file (default subject)")
    validate.add_argument(
        "--class-word", default="person",
        help='what the subject is, as a job file says it (default "person": each photo '
             "must show one face); ignored with a job file, which says it itself",
    )


def _request_commands(found: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name, text in (("retry", "go again on a failed subject"),
                       ("cancel", "stop all further work on a subject"),
                       ("regenerate", "generate prompts again for a done subject")):
        action = _command(found, name, text + " (a running pass acts on it)")
        action.add_argument("job", type=Path, help=JOB_HELP)
        action.add_argument("subject", help="the subject's folder name in the inbox")
    regenerate = found.choices["regenerate"]
    regenerate.add_argument("--prompt", action="append", metavar="SLUG",
                            help="a prompt to generate again, by slug or number (repeatable)")
    regenerate.add_argument("--new", action="store_true",
                            help="the job's prompts this subject never had (added since)")
