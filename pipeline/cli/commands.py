"""``lora-pipeline``: parse, build settings, set up logging, run, map errors to exit codes.

The exit codes are listed in :data:`pipeline.cli.parser.EXIT_CODES` (and ``--help``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import argcomplete
import structlog
from pydantic import ValidationError
from rich.console import Console

from ..clock import SystemClock
from ..config import Settings
from ..engine.control import act, request_args
from ..engine.runner import Runner, RunResult
from ..errors import BadCredentials, ConfigError, LockHeld, PipelineError, StateConflict
from ..inputs.dataset import DatasetReport, validate_subject
from ..inputs.inbox import SubjectFolder, scan_inbox
from ..jobfile.loading import JobConfig, PhotosSection, load_job, load_subject_overrides
from ..logs import configure_logging
from ..notify.pass_hooks import PassHooks
from ..store.location import hold_job, open_reader, open_store, state_name
from ..store.queries import SqlStore
from ..views.console import Retry, print_pass, print_status, print_validation, problems
from ..views.metrics import MetricsServer
from ..views.report import write_job_report
from ..views.summary import (
    EXIT_BAD_CREDENTIALS,
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_USAGE,
    exit_code_for_error,
    summarize,
)
from ..views.textsafe import line
from . import spending
from .parser import DEFAULT_CONFIG, build_parser
from .scaffold import scaffold
from .status import live_workers, status_data, workers_line

log = structlog.get_logger(__name__)
#: Commands that talk to the API, and so need a key before they do anything.
PAID_COMMANDS = frozenset({"run", "watch"})
#: Commands that read no settings (``init`` writes the settings file).
SETTINGS_FREE = frozenset({"emulator", "init"})


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argcomplete.autocomplete(parser)  # answers the shell and exits when it is asking
    args = parser.parse_args(argv)
    quiet = bool(getattr(args, "quiet", False))
    out, err = _console(sys.stdout, quiet=quiet), _console(sys.stderr)
    config = args.config or DEFAULT_CONFIG
    if args.config is not None and args.command not in SETTINGS_FREE and not args.config.is_file():
        _print_error(err, f"--config {args.config}: no such file")
        return EXIT_USAGE
    try:
        settings = Settings(_env_file=config)
    except ValidationError as exc:
        _print_error(err, f"settings ({config} or LORA_* variables): {exc}")
        return EXIT_USAGE
    if args.command in PAID_COMMANDS and settings.api_key is None:
        _print_error(err, f"no API key: LORA_API_KEY is empty or not set. Put the key in "
                          f"{config} (LORA_API_KEY=...) or set LORA_API_KEY in the "
                          "environment; nothing was read from the inbox or sent.")
        return EXIT_BAD_CREDENTIALS
    if quiet and settings.log_level in ("debug", "info"):
        settings = settings.model_copy(update={"log_level": "warning"})
    configure_logging(settings)
    try:
        return _dispatch(args, settings, out, err)
    except KeyboardInterrupt as exc:  # Ctrl-C before a run installed its own handler
        err.print("stopped before any work began")
        return exit_code_for_error(exc)
    except LockHeld as exc:
        err.print(line((str(exc), "yellow")))
        return exit_code_for_error(exc)
    except BadCredentials as exc:
        err.print(line(("error:", "red"), f" the API refused the key ({exc.reason}). Set "
                       "LORA_API_KEY in config.env or the environment; nothing was retried."))
        return exit_code_for_error(exc)
    except PipelineError as exc:  # ConfigError, StoreError, StateConflict and the others
        _print_error(err, str(exc))
        return exit_code_for_error(exc)


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # rich would exit 1; a reader that stopped reading (`| head -1`) is no error, and
        # the launcher ends such a run quietly with 0 (see pipeline.launch).
        self.quiet = True
        raise BrokenPipeError


def _console(file: TextIO, *, quiet: bool = False) -> Console:
    """Where people read us: results on stdout, errors and warnings on stderr. Our lines are
    ``Text`` from :func:`textsafe.line`; a ``str`` printed here all the same is shown as
    typed: no markup, emoji codes or highlighting. ``quiet`` prints nothing (``--quiet``)."""
    console = _Console(file=file, markup=False, emoji=False, highlight=False, quiet=quiet)
    if console.is_terminal:
        return console
    # Cron mail and log files: whole lines, no wrapping.
    return _Console(file=file, soft_wrap=True, markup=False, emoji=False, highlight=False,
                   quiet=quiet)


def _print_error(console: Console, message: str) -> None:
    """``error: message``. Its line breaks stay (a job file's problems come one a line) and
    every further line is indented under the first, so one that a folder name or the service
    put there reads as part of the error, never as a line of its own."""
    first, *rest = message.split("\n")
    console.print(line(("error:", "red"), f" {first}"))
    for more in rest:
        console.print(line(f"  {more}"))


def _dispatch(
    args: argparse.Namespace, settings: Settings, out: Console, err: Console
) -> int:
    command = args.command
    if command == "emulator":
        from ..emulator import run_from_args

        run_from_args(args)
        return EXIT_OK
    if command == "demo":
        from .demo import run_demo

        return asyncio.run(run_demo(args.workdir, out))
    if command == "validate":
        return _validate(args.path, args.kind, args.class_word, out)
    if command == "init":
        return _init(args.dir, out)
    job = load_job(args.job)
    if command in ("run", "watch"):
        max_wait = args.max_wait if command == "run" else None
        metrics = (args.metrics_host, args.metrics_port) if command == "watch" else None
        ran = asyncio.run(_run(job, settings, out, max_wait, metrics))
        _report_run(out, err, job, ran, _retry(job, args))
        return ran.result.exit_code
    if command == "status":
        return _status(job, settings, args, out, err)
    if command in ("spend", "plan"):
        look = spending.spend if command == "spend" else spending.plan
        return look(job, settings, out, as_json=args.json)
    if command == "report":
        with _read_state(job, settings, out) as store:
            if store is None:
                return EXIT_OK
            json_path, html_path = write_job_report(job, store)
        out.print(line(f"report: {html_path}"))
        out.print(line(f"data:   {json_path}"))
        return EXIT_OK
    return _request(job, settings, out, command, args)


def _status(
    job: JobConfig, settings: Settings, args: argparse.Namespace, out: Console, err: Console
) -> int:
    """Where every subject stands (and, with the state in PostgreSQL, which workers run)."""
    with _read_state(job, settings, err if args.json else out) as store:
        subjects = [] if store is None else summarize(store, job.job.name)
        workers = live_workers(store, job.job.name, settings)
    if args.json:
        spending.print_json(out, status_data(job.job.name, subjects, workers))
    elif store is not None:
        print_status(out, job.job.name, subjects, retry=_retry(job, args))
        if workers is not None:
            out.print(line(workers_line(workers, SystemClock().now())))
    return EXIT_OK


def _init(folder: Path, out: Console) -> int:
    job, config, inbox = scaffold(folder)
    out.print(line(f"wrote {job}, {config} (readable by you only) and {inbox}/. Next:"))
    out.print(line(f"  1. put your key in {config}: LORA_API_KEY=..."))
    out.print(line(f"  2. one folder of photos per subject in {inbox}/ (inbox/alice/*.jpg)"))
    out.print(line(f"  3. lora-pipeline validate {job}; "
                   f"lora-pipeline --config {config} plan {job}"))
    out.print(line(f"  4. lora-pipeline --config {config} run {job}"))
    return EXIT_OK


def _request(
    job: JobConfig, settings: Settings, console: Console, action: str, args: argparse.Namespace
) -> int:
    """Write the request to the store; act on it now unless a pass holds the job, which then
    acts on it within a poll interval."""
    now = SystemClock().now()
    extra = request_args(action, prompts=getattr(args, "prompt", None) or [],
                         new=bool(getattr(args, "new", False)))
    try:
        with hold_job(job, settings), open_store(job, settings) as store:
            request_id = store.add_request(job.job.name, args.subject, action, extra, now=now)
            try:
                outcome = act(store, job, store.request(request_id), now=now)
            except StateConflict as exc:
                store.finish_request(request_id, now=now, outcome=str(exc))
                raise
            store.finish_request(request_id, now=now, outcome=outcome)
    except LockHeld:
        with open_store(job, settings) as store:
            store.add_request(job.job.name, args.subject, action, extra, now=now)
        console.print(line(f"{args.subject}: {action} queued; the pass running job "
                           f"{job.job.name!r} acts on it within "
                           f"{settings.poll_interval_min:g} s (see `status`)"))
        return EXIT_OK
    console.print(line(outcome))
    return EXIT_OK


@contextmanager
def _read_state(
    job: JobConfig, settings: Settings, console: Console
) -> Iterator[SqlStore | None]:
    """The job's store, read-only, for commands that only look: they never create, upgrade
    or write-lock it. None, after saying so, when the job has no state yet."""
    store = open_reader(job, settings)
    if store is None:
        console.print(line(f"no subjects yet: job {job.job.name!r} has nothing in "
                           f"{state_name(job, settings)}"))
        yield None
        return
    with store:
        yield store


def _retry(job: JobConfig, args: argparse.Namespace) -> Retry:
    """What a failed subject's retry command names: this job file and ``--config`` file."""
    config = args.config.absolute() if args.config is not None else None
    return job.path.absolute(), config


@dataclass(frozen=True)
class _Ran:
    """A pass or a watch as the CLI reports it: its result and report, when it began, and
    each subject version's warnings before it (only newer ones are printed)."""

    result: RunResult
    html: Path | None
    started: float
    warnings_before: Mapping[tuple[str, int], frozenset[str]]


async def _run(
    job: JobConfig, settings: Settings, console: Console, max_wait: float | None,
    metrics: tuple[str, int | None] | None = None,
) -> _Ran:
    """A pass (``max_wait`` given) or a watch, with progress, report and notifications;
    a watch serves ``/metrics`` when ``metrics`` (host, port) has a port."""
    async with AsyncExitStack() as stack:
        on_round = None
        if metrics is not None and metrics[1] is not None:
            server = MetricsServer(job, settings, host=metrics[0], port=metrics[1])
            on_round = (await stack.enter_async_context(server)).round_done
        runner = Runner(job, settings, handle_signals=True, on_round=on_round)
        hooks = await stack.enter_async_context(PassHooks(job, settings, console))
        # The runner's clock is this one: what it changes from now on is this pass's doing.
        started = SystemClock().now()
        if max_wait is None:
            result = await runner.watch()
        else:
            result = await runner.run_once(max_wait=max_wait)
        return _Ran(result, await hooks.finished(result), started, hooks.warnings_before)


#: What ``--quiet`` still prints of a subject: its problems.
_QUIET_KINDS = frozenset({"error", "warning", "refused"})


def _report_run(out: Console, err: Console, job: JobConfig, ran: _Ran, retry: Retry) -> None:
    """What the pass changed and one line of totals on stdout (:func:`print_pass`); the
    spend ceiling on stderr, and under ``--quiet`` (stdout silenced) the errors, warnings
    and refused files this pass recorded too."""
    result, html = ran.result, ran.html
    print_pass(out, job.job.name, result.subjects, since=ran.started,
               warnings_before=ran.warnings_before, retry=retry)
    if out.quiet:
        for s in result.subjects:
            found = problems(s, retry=retry, since=ran.started,
                             warnings_before=ran.warnings_before)
            for kind, text in found:
                if kind in _QUIET_KINDS:
                    err.print(line(f"{job.job.name}/{s.name}: ", (f"{kind}:", "yellow"),
                                   f" {text}"), soft_wrap=True)
    for name in result.waiting:
        out.print(line(f"waiting for {name} to settle"))
    if result.ceiling:
        err.print(line(("spend ceiling:", "yellow"),
                       f" {len(result.ceiling)} paid request(s) not sent; "
                       f"{result.ceiling[-1]}"), soft_wrap=True)
    out.print(line(f"outputs: {job.job.outbox / job.job.name}"))
    if html is not None:
        out.print(line(f"report:  {html}"))


def _validate(path: Path, kind: str, class_word: str, console: Console) -> int:
    if path.is_file() and path.suffix == ".toml":
        job = load_job(path)
        reports = [_validate_folder(job, f)
                   for f in scan_inbox(job.job.inbox, settle_seconds=0, now=0.0,
                                       job_file=job.path)]
    elif path.is_dir():
        subdirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        folders = subdirs if subdirs and not _has_files(path) else [path]
        reports = [_validate_plain(f, kind, class_word) for f in folders]
    else:
        raise ConfigError(f"{path}: no such folder or job file")
    print_validation(console, reports)
    return EXIT_OK if all(r.ok and not r.rejected_files for r in reports) else EXIT_REJECTED


def _validate_folder(job: JobConfig, folder: SubjectFolder) -> DatasetReport:
    """One folder of a job's inbox; a refused folder or a bad subject.toml is its verdict."""
    problem = folder.refused
    if problem is None:
        try:
            settings = job.subject_settings(folder.path).readable()
        except ConfigError as exc:
            problem = str(exc)
    if problem is not None:
        return DatasetReport(folder.name, folder.path, (), (), (), problem)
    training = settings.training
    return validate_subject(folder.path, kind=training.kind, class_word=training.class_word,
                            root=job.job.inbox, captions=settings.captions,
                            photos=settings.photo_settings(), max_images=job.job.max_images,
                            min_images_warning=job.job.min_images_warning)


def _validate_plain(folder: Path, kind: str, class_word: str) -> DatasetReport:
    """One folder without a job file: the command line's kind and class word, unless the
    folder's ``subject.toml`` says otherwise (its ``[photos]`` settings apply too)."""
    try:
        overrides = load_subject_overrides(folder)
        training = overrides.training_updates()
        photos = PhotosSection(**overrides.photos_updates())
    except (ConfigError, ValidationError) as exc:
        return DatasetReport(folder.name, folder, (), (), (), str(exc))
    size = (int(training.get("width", 512)), int(training.get("height", 512)))
    return validate_subject(
        folder, kind=training.get("kind", kind), class_word=training.get("class_word", class_word),
        captions=overrides.all_captions(), photos=photos.settings(size),
    )


def _has_files(folder: Path) -> bool:
    return any(p.is_file() and not p.name.startswith(".") for p in folder.iterdir())


if __name__ == "__main__":
    sys.exit(main())
