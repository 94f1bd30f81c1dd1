"""One job shared by several ``watch`` workers through PostgreSQL, against one worker.

    git archive HEAD | tar -x -C /tmp/lora-sw-src   # optional: measure a fixed snapshot
    PYTHONPATH=/tmp/lora-sw-src .venv/bin/python benchmarks/shared_workers.py
        [--workload 200x20x2] [--workers 1,3] [--no-sqlite] [--workdir /tmp/lora-bench]
        [--photo-cache photo-checks.db] [--lease-seconds 60]
        [--json benchmarks/results-shared-workers.json]

The workload, the emulator (its own process, ``EmulatorSettings``), the pipeline settings,
the sample inbox and the lower bound are ``run.py``'s (``benchlib``). For each
configuration (SQLite with one worker, then N workers on one fresh PostgreSQL database for
each N of ``--workers``) the emulator is reset, the workers are started together as
``lora-pipeline watch JOB`` children, and the harness waits until every subject is ``done``
in the state store; then each worker gets SIGTERM and is reaped with ``os.wait4``.

- **wall**: from the first spawn to the last subject's ``finished_at`` (the workers' own
  clock); ``watch`` never exits on its own, so there is no end-of-run report in it.
- **requests**: the emulator's counters, as in ``run.py``.
- **database**: from the PostgreSQL server itself, read after the workers have exited (so
  their statistics are flushed): transactions (``pg_stat_database.xact_commit +
  xact_rollback``) and statements (``pg_stat_statements`` calls, BEGIN and COMMIT
  included: each is one round trip, except ``executemany`` batches that psycopg pipelines).
  The harness's own completion queries are left out of both.
- **CPU and peak RSS** per worker from its ``rusage``; the PostgreSQL server's and the
  emulator's CPU from psutil (the bench extra), when installed.

The throwaway server is ``tests/postgres.py``'s (run as ``nobody`` when root); it is
restarted once with ``pg_stat_statements`` preloaded. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
# After PYTHONPATH: a snapshot of the tree given there is what runs (the harness's
# ``tests.postgres`` and ``pipeline`` too, and the children inherit it).
sys.path.append(str(BENCH_DIR.parent))

from benchlib import (  # noqa: E402
    JOB_NAME,
    Child,
    EmulatorProcess,
    EmulatorSettings,
    Measurement,
    PipelineSettings,
    Workload,
    _child_env,
    machine,
    measure,
    pipeline_command,
    prepare_inbox,
    write_job,
)
from run import source_state  # noqa: E402

#: Marks the harness's own queries, so they are not counted as the workers'.
HARNESS_MARK = "bench_harness_done"
POLL_SECONDS = 0.5
#: The photo measures' file (``pipeline.inputs.photo_cache.CACHE_FILE``).
PHOTO_CACHE_FILE = "photo-checks.db"
STOP_SECONDS = 60.0


# --- the PostgreSQL server --------------------------------------------------------------


def enable_statement_stats(server: Any) -> bool:
    """Restart the throwaway server with ``pg_stat_statements`` preloaded; False if that
    fails (transactions are still counted then)."""
    import psycopg

    try:
        with psycopg.connect(server.url(), autocommit=True) as admin:
            admin.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        # pg_ctl restart reuses the options of the first start (postmaster.opts).
        server._run("pg_ctl", "-D", str(server.folder / "data"), "-l",
                    str(server.folder / "log"), "-w", "restart")
        with psycopg.connect(server.url(), autocommit=True) as admin:
            admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    except (psycopg.Error, subprocess.CalledProcessError) as exc:
        print(f"pg_stat_statements unavailable ({exc}): counting transactions only")
        return False
    return True


def database_counts(server: Any, url: str, statements: bool) -> dict[str, Any]:
    """What the server counted for the database of ``url`` (every session of it)."""
    import psycopg

    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(server.url(), autocommit=True) as admin:
        admin.execute("SELECT pg_stat_clear_snapshot()")
        row = admin.execute(
            "SELECT xact_commit, xact_rollback, tup_returned, tup_fetched, tup_inserted,"
            " tup_updated, tup_deleted FROM pg_stat_database WHERE datname = %s", (name,),
        ).fetchone()
        assert row is not None
        out: dict[str, Any] = dict(zip(
            ("xact_commit", "xact_rollback", "tup_returned", "tup_fetched", "tup_inserted",
             "tup_updated", "tup_deleted"), (int(v) for v in row), strict=True))
        if statements:
            rows = admin.execute(
                "SELECT query, calls, total_exec_time FROM pg_stat_statements s"
                " JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s",
                (name,),
            ).fetchall()
            ours = [(q, int(c), float(t)) for q, c, t in rows if HARNESS_MARK not in q]
            out["statements"] = sum(c for _, c, _ in ours)
            out["statement_ms"] = round(sum(t for _, _, t in ours), 1)
            out["top_statements"] = [
                {"calls": c, "ms": round(t, 1), "query": " ".join(q.split())[:160]}
                for q, c, t in sorted(ours, key=lambda r: -r[1])[:15]
            ]
    return out


def postgres_cpu(server: Any) -> float | None:
    """CPU seconds of the server: the postmaster and every backend it has reaped."""
    try:
        import psutil

        pid = int((server.folder / "data" / "postmaster.pid").read_text().split()[0])
        proc = psutil.Process(pid)
        times = proc.cpu_times()
        live = 0.0
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):  # a backend that just ended
                live += sum(child.cpu_times()[:2])
        return float(times.user + times.system + times.children_user + times.children_system
                     + live)
    except (ImportError, OSError, ValueError):
        return None


def process_cpu(pid: int) -> float | None:
    try:
        import psutil

        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)
    except (ImportError, OSError):
        return None


# --- the workers ------------------------------------------------------------------------


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log_path: Path
    started: float
    usage: dict[str, float] = field(default_factory=dict)

    def reap(self, *, since: float) -> bool:
        """Whether it has exited; if so, note its rusage (reaped here, not by Popen)."""
        if self.usage:
            return True
        pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
        if not pid:
            return False
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.usage = {
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "stop_seconds": round(time.monotonic() - since, 2),
            "exit": self.proc.returncode,
        }
        return True


def start_workers(count: int, job: Path, env: dict[str, str], run_dir: Path) -> list[Worker]:
    settings_file = run_dir / "settings.env"  # empty: every setting comes from ``env``
    settings_file.write_text("# every setting comes from the environment\n")
    workers = []
    for index in range(count):
        log_path = run_dir / f"worker-{index}.log"
        with open(log_path, "wb") as err:
            proc = subprocess.Popen(
                [*pipeline_command(), "--config", str(settings_file), "watch", str(job)],
                env=env, cwd=run_dir, stdout=subprocess.DEVNULL, stderr=err,
            )
        workers.append(Worker(proc, log_path, time.time()))
    return workers


def stop_workers(workers: list[Worker]) -> None:
    """SIGTERM each, then reap it with its rusage (SIGKILL after ``STOP_SECONDS``)."""
    asked = time.monotonic()
    for worker in workers:
        if not worker.reap(since=asked):
            worker.proc.send_signal(signal.SIGTERM)
    for worker in workers:
        while not worker.reap(since=asked):
            if time.monotonic() - asked > STOP_SECONDS:
                worker.proc.kill()
            time.sleep(0.05)


def worker_log_facts(path: Path) -> dict[str, Any]:
    """From a worker's JSON log: trainings and pictures it did, the roles it took."""
    events: Counter[str] = Counter()
    roles: list[str] = []
    with contextlib.suppress(OSError), open(path, errors="replace") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            event = record.get("event", "")
            events[event] += 1
            if event == "worker.role_taken":
                roles.append(record.get("role", ""))
    return {
        "trainings_submitted": events["train.submitted"],
        "pictures_saved": events["picture.saved"],
        "intake_versions": events["intake.version"],
        "roles_taken": roles,
        "leases_lost": events["worker.leases_lost"],
    }


# --- completion -------------------------------------------------------------------------

DONE_QUERY = (
    f"SELECT COUNT(*) FILTER (WHERE state = 'done') AS {HARNESS_MARK}, COUNT(*),"
    " COUNT(*) FILTER (WHERE state IN ('failed', 'canceled', 'rejected')),"
    " MAX(finished_at) FROM subjects WHERE superseded = 0"
)


class Progress:
    """How many subjects are done, read from the state store every ``POLL_SECONDS``."""

    def __init__(self, url: str | None, sqlite_path: Path | None) -> None:
        self.url, self.sqlite_path = url, sqlite_path
        self.queries = 0
        self._pg: Any = None

    def read(self) -> tuple[int, int, int, float | None]:
        if self.url is not None:
            import psycopg

            if self._pg is None:
                self._pg = psycopg.connect(self.url, autocommit=True)
            self.queries += 1
            try:
                row = self._pg.execute(DONE_QUERY).fetchone()
            except psycopg.errors.UndefinedTable:
                return 0, 0, 0, None
        else:
            assert self.sqlite_path is not None
            if not self.sqlite_path.exists():
                return 0, 0, 0, None
            db = sqlite3.connect(f"file:{self.sqlite_path}?mode=ro", uri=True, timeout=5)
            try:
                row = db.execute(DONE_QUERY.replace(
                    "COUNT(*) FILTER (WHERE state = 'done')", "SUM(state = 'done')").replace(
                    "COUNT(*) FILTER (WHERE state IN ('failed', 'canceled', 'rejected'))",
                    "SUM(state IN ('failed', 'canceled', 'rejected'))")).fetchone()
            except sqlite3.OperationalError:
                return 0, 0, 0, None
            finally:
                db.close()
        done, total, settled_badly, last = row
        return int(done or 0), int(total or 0), int(settled_badly or 0), last

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()


def wait_until_done(progress: Progress, workers: list[Worker], subjects: int,
                    timeout: float) -> tuple[bool, float | None]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, total, bad, last = progress.read()
        if total >= subjects and done + bad >= total:
            return bad == 0, last
        if all(w.reap(since=time.monotonic()) for w in workers):
            return False, last  # every worker exited: nothing more will happen
        time.sleep(POLL_SECONDS)
    return False, None


# --- one configuration ------------------------------------------------------------------


def run_config(
    label: str, count: int, emulator: EmulatorProcess, workload: Workload, inbox: Path,
    workdir: Path, settings: PipelineSettings, server: Any | None, statements: bool,
    timeout: float, photo_cache: Path | None = None, lease_seconds: float | None = None,
) -> Measurement:
    run_dir = workdir / f"shared-{label}-{workload.name}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    outbox = run_dir / "outbox"
    job = write_job(run_dir / "job.toml", inbox, outbox, workload)
    env = _child_env(settings.env(emulator.base_url, run_dir / "state",
                                  emulator.settings.txt2img_images_per_minute))
    env["XDG_CACHE_HOME"] = str(run_dir / "cache")  # the photo measures: fresh per run
    if lease_seconds is not None:  # a worker's rescan (new subjects claimed) is a third of it
        env["LORA_LEASE_SECONDS"] = str(lease_seconds)
    if photo_cache is not None:  # warm: intake finds every photo's measures already taken
        for folder in (run_dir / "cache" / "lora-pipeline" / JOB_NAME, run_dir / "state"):
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(photo_cache, folder / PHOTO_CACHE_FILE)
    url = None
    if server is not None:
        url = server.new_database()
        env["LORA_STATE_URL"] = url
    progress = Progress(url, None if url else run_dir / "state" / "state.db")
    emulator.reset()
    pg_cpu_before = postgres_cpu(server) if server is not None else None
    emulator_pid = emulator._proc.pid
    emulator_cpu_before = process_cpu(emulator_pid)
    load = os.getloadavg()[0]
    workers = start_workers(count, job, env, run_dir)
    spawned = workers[0].started
    try:
        complete, last = wait_until_done(progress, workers, workload.subjects, timeout)
        seen = time.time()
    finally:
        stop_workers(workers)
        progress.close()
    wall = (last - spawned) if complete and last is not None else seen - spawned
    child = Child(
        wall=wall,
        cpu_user=sum(w.usage["cpu_seconds"] for w in workers), cpu_system=0.0,
        peak_rss_mb=max(w.usage["peak_rss_mb"] for w in workers),
        returncode=0 if complete else 1, loadavg_before=load,
    )
    result = measure(label, emulator, workload, inbox, child, outbox / JOB_NAME)
    result.extra.update(
        workers=count,
        store="postgresql" if server is not None else "sqlite",
        complete=complete,
        photo_cache="warm" if photo_cache is not None else "cold",
        lease_seconds=lease_seconds or 60.0,
        done_seen_after=round(seen - spawned, 2),
        per_worker=[{**w.usage, **worker_log_facts(w.log_path)} for w in workers],
        emulator_cpu_seconds=_delta(process_cpu(emulator_pid), emulator_cpu_before),
    )
    if server is not None and url is not None:
        db = database_counts(server, url, statements)
        xacts = db["xact_commit"] + db["xact_rollback"] - progress.queries
        db["harness_queries_left_out"] = progress.queries
        db["transactions"] = xacts
        db["transactions_per_subject"] = round(xacts / workload.subjects, 1)
        if "statements" in db:
            db["statements_per_subject"] = round(db["statements"] / workload.subjects, 1)
        db["server_cpu_seconds"] = _delta(postgres_cpu(server), pg_cpu_before)
        result.extra["database"] = db
    return result


def _delta(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else round(after - before, 2)


def summary_line(m: Measurement) -> str:
    db = m.extra.get("database", {})
    per = m.extra["per_worker"]
    return (
        f"{m.client:<14} wall {m.wall:7.1f} s  bound {m.lower_bound['bound']:6.1f} s"
        f"  ratio {m.ratio_to_bound:5.2f}  req/subj {m.requests_per_subject['total']:6.1f}"
        f"  429s {m.rate_limited_429}"
        f"  db xact/subj {db.get('transactions_per_subject', '-')}"
        f"  stmt/subj {db.get('statements_per_subject', '-')}"
        f"  pictures {m.pictures_written}/{m.pictures_expected}"
        f"  workers cpu {[w['cpu_seconds'] for w in per]} rss {[w['peak_rss_mb'] for w in per]}"
        f"  trainings {[w['trainings_submitted'] for w in per]}"
        f"  complete {m.extra['complete']}"
    )


def snapshot_of() -> dict[str, str]:
    """Where the measured pipeline came from: a snapshot on PYTHONPATH (``git archive``,
    with the commit written to ``.commit`` beside it) or this tree."""
    import pipeline

    root = Path(pipeline.__file__).resolve().parent.parent
    commit = root / ".commit"
    return {"root": str(root),
            "commit": commit.read_text().strip() if commit.exists() else "this tree"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", default="200x20x2", help="SUBJECTSxIMAGESxPROMPTS")
    parser.add_argument("--workers", default="1,3",
                        help="comma-separated worker counts, each on its own PostgreSQL database")
    parser.add_argument("--no-sqlite", action="store_true",
                        help="skip the baseline: one worker on the SQLite default")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lora-bench"))
    parser.add_argument("--json", type=Path,
                        default=BENCH_DIR / "results-shared-workers.json")
    parser.add_argument("--timeout", type=float, default=1200.0,
                        help="seconds a configuration may take before it is stopped")
    parser.add_argument("--photo-cache", type=Path, default=None,
                        help="a photo-checks.db of an earlier run to start every worker with "
                             "(intake then costs almost no CPU: isolates the coordination)")
    parser.add_argument("--lease-seconds", type=float, default=None,
                        help="LORA_LEASE_SECONDS for the workers (default: the pipeline's, 60)")
    parser.add_argument("--train-seconds", type=float, default=EmulatorSettings.train_seconds)
    args = parser.parse_args(argv)

    from dataclasses import replace

    from tests.postgres import PostgresServer

    workload = Workload.parse(args.workload)
    counts = [int(n) for n in args.workers.split(",") if n]
    emulator_settings = replace(EmulatorSettings(), train_seconds=args.train_seconds)
    pipeline_settings = PipelineSettings()
    args.workdir.mkdir(parents=True, exist_ok=True)
    inbox = prepare_inbox(args.workdir, workload)
    started = time.monotonic()
    results: list[Measurement] = []
    with EmulatorProcess(emulator_settings, args.workdir / "emulator-shared.log") as emulator:
        if not args.no_sqlite:
            results.append(run_config("sqlite x1", 1, emulator, workload, inbox, args.workdir,
                                      pipeline_settings, None, False, args.timeout,
                                      args.photo_cache, args.lease_seconds))
            print(summary_line(results[-1]), flush=True)
        with PostgresServer.start() as server:
            statements = enable_statement_stats(server)
            for count in counts:
                results.append(run_config(
                    f"postgres x{count}", count, emulator, workload, inbox, args.workdir,
                    pipeline_settings, server, statements, args.timeout, args.photo_cache,
                    args.lease_seconds))
                print(summary_line(results[-1]), flush=True)
    report = {
        "machine": machine(),
        "source": source_state(),
        "emulator": asdict(emulator_settings),
        "pipeline": asdict(pipeline_settings),
        "pipeline_source": snapshot_of(),
        "command": " ".join(["benchmarks/shared_workers.py",
                             *(argv if argv is not None else sys.argv[1:])]),
        "total_seconds": round(time.monotonic() - started, 1),
        "results": [asdict(r) for r in results],
    }
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"figures written to {args.json} ({report['total_seconds']} s in all)")
    return 0 if all(r.extra["complete"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
