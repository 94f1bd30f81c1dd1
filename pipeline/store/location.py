"""Where a job's state lives, and the one way every command opens it.

    folder = state_dir(job, settings)       # state.db and <job>.lock
    with open_store(job, settings) as store:  # a pass, retry, cancel: may create, upgrades
        ...
    store = open_reader(job, settings)      # status, report: read-only; None when none yet

By default the state lives with the results it describes, in ``<outbox>/<job>/.lora-pipeline/``.
The outbox is found from the job file, so cron, a person's shell in another folder and every
other working directory see the same store, the same lock and the same results. A state
folder taken from the working directory would give each of them a store of its own, which
uploads, trains and generates everything again. ``LORA_STATE_DIR`` moves the folder
elsewhere. The inbox skips hidden folders and the outbox helpers only touch ``.*.part``
files, so the state folder is never taken for a subject or for results.

With ``LORA_STATE_URL`` the state is a PostgreSQL database shared by several hosts
(:mod:`pipeline.store.postgres`) instead: no state file and no job lock (workers lease
subjects, :mod:`pipeline.store.coordination`), and the photo measures in a cache folder of
this host's (:func:`photo_cache_dir`).

A state file that is missing or empty beside an outbox that already holds results is
refused (:class:`~pipeline.errors.StoreError`) rather than started afresh: a new store would
pay for every subject again and write over those results. Rebuilding the state from the
sidecars would be the alternative; refusing keeps that decision with a person.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import structlog

from ..errors import LockHeld, PipelineError, StoreError
from ..redact import Scrubber
from .coordination import workers_alive
from .lock import job_lock
from .postgres import NoStateYet, PostgresStore, describe
from .queries import SqlStore
from .sqlite import SqliteStore

if TYPE_CHECKING:
    from ..config import Settings
    from ..jobfile.loading import JobConfig

log = structlog.get_logger(__name__)

__all__ = ["STATE_FILE", "STATE_FOLDER", "first_result", "open_reader", "open_store",
           "reader_once_made", "state_dir", "state_file"]

#: The state folder inside ``<outbox>/<job>/``; hidden, so nothing takes it for a subject.
STATE_FOLDER: Final = ".lora-pipeline"
STATE_FILE: Final = "state.db"
#: Files of ``<outbox>/<job>/`` that are not results: the report is rebuilt from the state.
#: (The names of :mod:`pipeline.views.report`, which the store layer does not import.)
_NOT_RESULTS: Final = frozenset({"report.json", "report.html"})


def state_dir(job: JobConfig, settings: Settings) -> Path:
    """The folder of the job's state file and lock: ``LORA_STATE_DIR`` when it is set,
    else ``<outbox>/<job>/.lora-pipeline`` (absolute: the job file places the outbox).

    ``<outbox>/<job>`` and the state folder are the pipeline's own: a link (or a file)
    planted at either is refused, so the state and the lock are never written through it.
    """
    if settings.state_dir is not None:
        return settings.state_dir
    job_root = job.job.outbox / job.job.name
    folder = job_root / STATE_FOLDER
    for place in (job_root, folder):
        if place.is_symlink() or (place.exists() and not place.is_dir()):
            raise StoreError(
                f"{place} is a link or a file where the pipeline keeps a folder of its own: "
                "no state is kept or written through it; move it away"
            )
    return folder


def photo_cache_dir(job: JobConfig, settings: Settings) -> Path:
    """The folder of the job's photo measures (a cache): the state folder; with several
    hosts (``LORA_STATE_URL``) a folder of this host's instead, never the shared mount,
    where SQLite's locking cannot be trusted: ``<cache>/<job>``, the cache being the
    service's ``$CACHE_DIRECTORY`` (systemd's ``CacheDirectory=``), else
    ``$XDG_CACHE_HOME/lora-pipeline``, else ``~/.cache/lora-pipeline``."""
    if settings.state_url is None:
        return state_dir(job, settings)
    cache = os.environ.get("CACHE_DIRECTORY")
    if not cache:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        cache = str(Path(base) / "lora-pipeline")
    return Path(cache) / job.job.name


def _database(settings: Settings, **options: Any) -> PostgresStore:
    """The PostgreSQL state of ``LORA_STATE_URL`` (which the caller checked is set)."""
    assert settings.state_url is not None
    return PostgresStore(settings.state_url.get_secret_value(), **options)


@contextmanager
def hold_job(job: JobConfig, settings: Settings) -> Iterator[None]:
    """Keep passes of the job from working beside a person's request acted on at once, or
    raise :class:`~pipeline.errors.LockHeld` (the request is then queued for the pass): the
    job's lock; with several hosts, no worker of the job may be alive."""
    if settings.state_url is None:
        with job_lock(state_dir(job, settings), job.job.name):
            yield
        return
    try:
        with _database(settings, read_only=True) as store:
            hosts = workers_alive(store, job.job.name, now=time.time(),
                                  ttl=settings.lease_seconds)
    except NoStateYet:
        hosts = []
    if hosts:
        where = ", ".join(sorted({w.host for w in hosts}))
        raise LockHeld(f"workers of job {job.job.name!r} are running on {where}")
    yield


def state_name(job: JobConfig, settings: Settings) -> str:
    """Where the job's state is, as a message names it: its file, or its database."""
    if settings.state_url is not None:
        return f"the state database {describe(settings.state_url.get_secret_value())}"
    return f"the state file {state_file(job, settings)}"


def state_file(job: JobConfig, settings: Settings) -> Path:
    return state_dir(job, settings) / STATE_FILE


def first_result(job_dir: Path) -> Path | None:
    """A file the pipeline left in ``job_dir`` (``<outbox>/<job>``) that only the state
    knows the cost of: a LoRA, a picture, a sidecar. Hidden entries (the state folder,
    temp files) and the report do not count; links to folders are not followed."""
    if not job_dir.is_dir():
        return None
    for root, folders, files in os.walk(job_dir):
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or (root == str(job_dir) and name in _NOT_RESULTS):
                continue
            return Path(root) / name
    return None


def open_store(
    job: JobConfig, settings: Settings, *, scrub: Scrubber | None = None,
    owner: str | None = None,
) -> SqlStore:
    """The job's store for a pass or a person's request: created when there is none yet,
    upgraded when it is older. Raises :class:`StoreError` when it is unusable, or when it
    knows nothing of the job while the outbox holds results (see the module).

    With ``LORA_STATE_URL`` it is the PostgreSQL database several workers share; ``owner``
    names the worker in its leases (see :class:`~pipeline.store.postgres.PostgresStore`)."""
    if settings.state_url is not None:
        shared = _database(settings, scrub=scrub, owner=owner)
        return _knows_job(shared, job, shared.name)
    path = state_file(job, settings)
    if _fresh(path):
        _refuse_forgotten_results(job, path, "is missing" if not path.exists() else "is empty")
    store = SqliteStore(path, scrub=scrub)
    return _knows_job(store, job, path)


def open_reader(job: JobConfig, settings: Settings) -> SqlStore | None:
    """The job's store opened read-only, for commands that only look; None when there is
    none yet (nothing is created). Refuses what :func:`open_store` refuses, and a store of
    an older schema (a pass upgrades it)."""
    if settings.state_url is not None:
        try:
            shared = _database(settings, read_only=True)
        except NoStateYet:
            _refuse_forgotten_results(job, describe(settings.state_url.get_secret_value()),
                                      "holds no state yet")
            return None
        return _knows_job(shared, job, shared.name)
    path = state_file(job, settings)
    if _fresh(path):
        _refuse_forgotten_results(job, path, "is missing" if not path.exists() else "is empty")
        return None
    return _knows_job(SqliteStore(path, read_only=True), job, path)


def _fresh(path: Path) -> bool:
    """No state at ``path`` yet: no file, or an empty one with no write-ahead log beside it."""
    if not path.exists():
        return True
    wal = path.with_name(path.name + "-wal")
    return path.is_file() and path.stat().st_size == 0 and not wal.exists()


def _knows_job(store: SqlStore, job: JobConfig, path: Path | str) -> SqlStore:
    try:
        if not store.subjects(job.job.name):
            _refuse_forgotten_results(job, path, f"holds no subject of job {job.job.name!r}")
    except BaseException:
        store.close()
        raise
    return store


def _refuse_forgotten_results(job: JobConfig, path: Path | str, how: str) -> None:
    """``path``: the state file, or the name of the PostgreSQL database."""
    job_dir = job.job.outbox / job.job.name
    result = first_result(job_dir)
    if result is None:
        return
    if isinstance(path, Path):
        state, restore = f"the state file {path}", (
            f"Restore the state file to {path} (from a backup, or from where it was kept "
            "before: LORA_STATE_DIR, or .lora-pipeline/ in the folder an older lora-pipeline "
            "ran from)")
    else:
        state, restore = f"the state database {path}", (
            "Restore the state database from a backup, or point LORA_STATE_URL at the "
            "database that holds this job")
    raise StoreError(
        f"{state} {how}, but {job_dir} already holds results of job "
        f"{job.job.name!r} (such as {result}). With a new state every subject would be "
        "uploaded, trained and generated again, paid again, and its results written over, "
        f"so nothing was done. {restore}; or move {job_dir} away to start afresh"
    )


def reader_once_made(job: JobConfig, settings: Settings) -> SqlStore | None:
    """The job's store opened read-only for a look beside a running pass (its notifications,
    its metrics), or None while there is none to read yet: the pass makes (or upgrades) it,
    and it, not the look, reports a store that cannot be used."""
    try:
        if settings.state_url is not None:
            return _database(settings, read_only=True)
        path = state_file(job, settings)
        if not path.is_file():
            return None
        return SqliteStore(path, read_only=True)
    except PipelineError as exc:
        log.debug("store.not_ready", reason=str(exc))
        return None
