"""Crash consistency: the pipeline as a real process, killed at random moments, restarted.

The emulator runs in its own process (``python -m pipeline emulator``) with faults injected
and keeps its state across the pipeline's deaths, as the hosted service would. The pipeline
runs as ``python -m pipeline run JOB``; each pass is sent SIGKILL after a random (seeded)
delay, then started again. Subjects arrive in waves, moved into the inbox atomically, so the
kills land in every stage. Then passes run to the end, and :func:`verify` checks, from the
emulator's own task list and counters, the outbox and the state store:

- no training name was created twice, and every training is accounted for by the state: a
  subject version has one, plus one per FAILED training that ``max_training_retries``
  re-trained; every subject ends settled;
- every prompt of every finished subject has its pictures exactly once (named for the subject,
  the prompt and the number, with their sidecars), with no partial, temp or stray file left;
- the state store passes ``integrity_problems()`` after every kill and at the end;
- the ledger never counts less than the service made: its trainings and pictures are at
  least the emulator's ``trainings_created`` and ``images_requested``.

The CI-sized run is ``tests/reliability/test_crash.py``; a longer soak is

    python -m tests.reliability.harness --subjects 200 --kills 100 --graceful-every 4 --seed 7

(``make soak``), which prints the figures quoted in ``docs/reliability.md`` and exits 1 if
any check failed. With ``--graceful-every N`` every Nth interruption is a SIGTERM or SIGINT
instead: it must end the pass with its documented exit code (143, 130), unless it landed
before the run's handlers were in place (interpreter start-up), which is counted apart.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from pipeline.engine.outbox import SubjectOutbox
from pipeline.engine.stages.train import training_name
from pipeline.files import PART_SUFFIX
from pipeline.store.protocol import StateStore, SubjectRow
from pipeline.store.sqlite import SqliteStore
from pipeline.store.states import CANCELED, DONE, FAILED, GEN_DONE, REJECTED, SETTLED_STATES
from pipeline.views.summary import EXIT_FAILED, EXIT_OK, EXIT_REJECTED, EXIT_SIGINT, EXIT_SIGTERM
from tests.pictures import picture

REPO = Path(__file__).resolve().parents[2]
API_KEY = "sk-soak-harness-key"
#: The folder of a later version inside a subject's (see pipeline.engine.outbox).
VERSION_FOLDER = re.compile(r"^v\d+$")
JOB = "soak"
#: Exit codes a pass that was not killed may end with (see the README).
CLEAN_EXITS = frozenset({EXIT_OK, EXIT_REJECTED, EXIT_FAILED})
GRACEFUL = {signal.SIGTERM: EXIT_SIGTERM, signal.SIGINT: EXIT_SIGINT}
#: The photos of a subject: small, to keep uploads quick (the gate warns, it does not refuse).
PHOTO_SIZE = (96, 96)

#: Emulator flags of the soak: fast tasks, every request-level fault, FAILED trainings.
DEFAULT_FAULTS: dict[str, float] = {
    "fault_5xx": 0.03,
    "fault_429": 0.03,
    "fault_429_retry_after": 0.5,
    "fault_drop": 0.03,
    "fault_slow": 0.01,
    "slow_seconds": 2.0,
    "fault_training_failed": 0.1,
}
EMULATOR_TIMINGS: dict[str, float] = {
    "queue_seconds": 0.2,
    "train_seconds": 2.0,
    "deploy_seconds": 0.3,
    "generation_queue_seconds": 0.1,
    "generation_seconds": 0.5,
}
#: The account's txt2img limit, as high as the pipeline is told (LORA_IMAGES_PER_MINUTE):
#: 429s come from fault injection only (tests/reliability/test_faults.py covers real ones).
UNLIMITED: dict[str, Any] = {"txt2img_images_per_minute": 100000}
#: Pipeline settings: quick polls, and a read timeout the slow answers overrun.
PIPELINE_SETTINGS: dict[str, str] = {
    "LORA_POLL_INTERVAL_MIN": "0.05",
    "LORA_POLL_INTERVAL_MAX": "0.3",
    "LORA_GENERATION_POLL_INTERVAL": "0.1",
    "LORA_RETRY_BASE_DELAY": "0.02",
    "LORA_RETRY_MAX_DELAY": "0.2",
    "LORA_CONNECT_TIMEOUT": "2",
    "LORA_READ_TIMEOUT": "1",
    "LORA_TOTAL_TIMEOUT": "10",
    "LORA_IMAGES_PER_MINUTE": "100000",
    "LORA_UPLOAD_CONCURRENCY": "2",
    "LORA_DOWNLOAD_CONCURRENCY": "2",
    "LORA_LOG_FORMAT": "json",
}


@dataclass
class SoakConfig:
    """What one soak does; the defaults are the CI-sized run."""

    subjects: int = 30
    kills: int = 20
    images: int = 3
    prompts: int = 1
    image_num: int = 2
    #: Subjects arrive in this many waves; 0: about one wave per 3 interruptions, so that
    #: work is in flight at most of them.
    waves: int = 0
    seed: int = 1
    kill_after: tuple[float, float] = (0.5, 2.0)
    #: Every Nth interruption is a SIGTERM or SIGINT (alternating) instead of SIGKILL; 0: never.
    graceful_every: int = 0
    max_training_retries: int = 1
    final_passes: int = 8
    faults: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FAULTS))


@dataclass
class SoakReport:
    """The figures of one soak, and every problem :func:`verify` found (none, if it held)."""

    subjects: int = 0
    states: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    kills: int = 0
    kills_in_flight: dict[str, int] = field(default_factory=dict)
    graceful_stops: dict[str, int] = field(default_factory=dict)
    graceful_max_seconds: float = 0.0
    passes: int = 0
    exit_codes: dict[str, int] = field(default_factory=dict)
    faults_injected: dict[str, int] = field(default_factory=dict)
    trainings_paid: int = 0
    retrainings_after_failed: int = 0
    duplicate_trainings: int = 0
    prompts: int = 0
    generation_tasks: int = 0
    #: Generations found `submitting` after a SIGKILL: POSTs that may have been cut in flight.
    generation_posts_cut: int = 0
    #: Creates sent again after an answer lost to an injected fault (the engine's policy).
    generation_resends: int = 0
    #: Tasks the service made that the state never recorded (each a picture set paid twice).
    generation_tasks_unrecorded: int = 0
    #: What the ledger counts, and what the service made (never more than the ledger).
    ledger_trainings: int = 0
    ledger_images: int = 0
    service_images: int = 0
    pictures_expected: int = 0
    pictures_present: int = 0
    results_lost: int = 0
    temp_files_after_kills: int = 0
    temp_files_at_end: int = 0
    integrity_checks: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The figures as a person reads them."""
        in_flight = ", ".join(f"{k} {v}" for k, v in sorted(self.kills_in_flight.items()))
        graceful = "; ".join(f"{k} x{v}" for k, v in sorted(self.graceful_stops.items()))
        return [
            f"subjects: {self.subjects} ({_fmt(self.states)})",
            *(f"  {name}: {reason}" for name, reason in sorted(self.reasons.items())),
            f"SIGKILLs survived: {self.kills} (what was in flight at each: {in_flight})",
            f"graceful stops: {graceful or 'none'}"
            + (f" (slowest {self.graceful_max_seconds:.1f} s)" if graceful else ""),
            f"pipeline passes: {self.passes} (exit codes: {_fmt(self.exit_codes)})",
            f"faults injected: {_fmt(self.faults_injected)}",
            f"trainings paid: {self.trainings_paid} ({self.retrainings_after_failed} re-trainings"
            f" after FAILED); duplicate trainings: {self.duplicate_trainings}",
            f"generation tasks: {self.generation_tasks} for {self.prompts} prompts;"
            f" not recorded (paid twice): {self.generation_tasks_unrecorded}, at most the"
            f" POSTs a SIGKILL cut in flight ({self.generation_posts_cut}) plus the re-sends"
            f" after a lost answer ({self.generation_resends})",
            f"ledger: {self.ledger_trainings} trainings, {self.ledger_images} pictures counted;"
            f" the service made {self.trainings_paid} and {self.service_images}",
            f"pictures: {self.pictures_present} present of {self.pictures_expected} expected;"
            f" results lost: {self.results_lost}",
            f"temp files left by kills: {self.temp_files_after_kills}, at the end:"
            f" {self.temp_files_at_end}",
            f"state store consistent: {self.integrity_checks} checks (after every kill and at"
            " the end)",
            f"wall time: {self.seconds:.0f} s",
            f"problems: {len(self.problems)}",
            *(f"  PROBLEM {problem}" for problem in self.problems),
        ]


def _fmt(counts: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in sorted(counts.items())) or "none"


# --- processes --------------------------------------------------------------------------


def clean_env() -> dict[str, str]:
    """The environment of a child process: no LORA_* setting leaks in from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORA_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


class EmulatorProcess:
    """``python -m pipeline emulator`` on a free port, in its own process."""

    def __init__(self, workdir: Path, flags: dict[str, Any], *, api_key: str = API_KEY) -> None:
        args = [sys.executable, "-m", "pipeline", "--config", str(workdir / "none.env"),
                "emulator", "--port", "0", "--api-key", api_key]
        for name, value in {**UNLIMITED, **flags}.items():
            if isinstance(value, list):
                for item in value:
                    args += [f"--{name.replace('_', '-').removesuffix('s')}", str(item)]
            else:
                args += [f"--{name.replace('_', '-')}", str(value)]
        self._log = open(workdir / "emulator.log", "w")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            args, cwd=workdir, env=clean_env(), stdout=subprocess.PIPE, stderr=self._log,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if "listening on" not in line:
            self.stop()
            raise RuntimeError(f"the emulator did not start: {line!r}")
        self.base_url = line.rsplit(" ", 1)[-1].strip()

    def get(self, path: str) -> Any:
        """A JSON answer of the emulator's own routes (``/_emulator/...``)."""
        with urllib.request.urlopen(self.base_url + path, timeout=10) as answer:
            return json.load(answer)

    def counters(self) -> dict[str, Any]:
        return dict(self.get("/_emulator/counters"))

    def trainings(self) -> list[dict[str, Any]]:
        return list(self.get("/_emulator/trainings")["trainings"])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()


@contextmanager
def emulator_process(workdir: Path, flags: dict[str, Any]) -> Iterator[EmulatorProcess]:
    emulator = EmulatorProcess(workdir, flags)
    try:
        yield emulator
    finally:
        emulator.stop()


def start_pipeline(workdir: Path, number: int, *args: str,
                   env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """One pass of ``python -m pipeline --config config.env ARGS``; output in ``logs/``;
    ``env`` adds to :func:`clean_env`."""
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    with open(logs / f"{number:03d}.out", "wb") as out, open(logs / f"{number:03d}.err", "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline", "--config", str(workdir / "config.env"), *args],
            cwd=workdir, env={**clean_env(), **(env or {})}, stdout=out, stderr=err,
        )


def wait_for_pass_start(workdir: Path, number: int, process: subprocess.Popen[bytes],
                        timeout: float = 30.0) -> None:
    """Until pass ``number`` logged ``pass.started`` (or ended, or ``timeout`` passed)."""
    log_file = workdir / "logs" / f"{number:03d}.err"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if b'"pass.started"' in log_file.read_bytes():
            return
        time.sleep(0.02)


# --- the workspace ----------------------------------------------------------------------


def write_workspace(workdir: Path, base_url: str, config: SoakConfig,
                    settings: dict[str, str] | None = None) -> Path:
    """config.env (``settings`` override the soak's) and the job file; returns the job file."""
    settings = {
        "LORA_API_KEY": API_KEY, "LORA_BASE_URL": base_url,
        "LORA_STATE_DIR": str(workdir / "state"), **PIPELINE_SETTINGS, **(settings or {}),
    }
    (workdir / "config.env").write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    prompts = ", ".join(f'"{{instance_prompt}}, take {n}"' for n in range(1, config.prompts + 1))
    job = workdir / f"{JOB}.toml"
    job.write_text(f"""
[job]
name = "{JOB}"
inbox = "inbox"
outbox = "outbox"
settle_seconds = 0
max_training_retries = {config.max_training_retries}

[training]
kind = "subject"

[generation]
image_num = {config.image_num}
width = 128
height = 128
prompts = [{prompts}]

[photos]
faces = "off"  # tests.pictures are sharp and distinct, but no one's face
""")
    (workdir / "inbox").mkdir(exist_ok=True)
    return job


def subject_names(count: int) -> list[str]:
    return [f"s{index:03d}" for index in range(count)]


def picture_seed(seed: int, name: str, index: int) -> int:
    """The :func:`tests.pictures.picture` seed of one photo: its own for every soak seed,
    subject and photo, so that no two photos of the inbox are near-duplicates."""
    digest = hashlib.sha256(f"{seed}:{name}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def add_subjects(workdir: Path, names: list[str], images: int, seed: int) -> None:
    """Small, sharp, distinct photos for each subject (:mod:`tests.pictures`, which the
    photo gate passes), each folder moved in at once."""
    staging = workdir / "staging"
    for name in names:
        folder = staging / name
        folder.mkdir(parents=True)
        for index in range(images):
            picture(picture_seed(seed, name, index), PHOTO_SIZE).save(
                folder / f"{name}_{index}.png")
        os.rename(folder, workdir / "inbox" / name)


# --- reading what happened --------------------------------------------------------------


def subject_rows(state_db: Path, job: str = JOB) -> list[SubjectRow]:
    """Every version of every subject, read-only."""
    if not state_db.exists():
        return []
    db = sqlite3.connect(f"file:{state_db}?mode=ro", uri=True, timeout=30)
    db.row_factory = sqlite3.Row
    try:
        return [SubjectRow(**row) for row in db.execute(
            "SELECT * FROM subjects WHERE job = ? ORDER BY name, version", (job,))]
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []  # killed (or looked at) between creating the file and its schema
        raise
    finally:
        db.close()


def generations_in(state_db: Path, state: str) -> list[sqlite3.Row]:
    """The generations in ``state``, read-only (none before the schema exists)."""
    if not state_db.exists():
        return []
    db = sqlite3.connect(f"file:{state_db}?mode=ro", uri=True, timeout=30)
    db.row_factory = sqlite3.Row
    try:
        return list(db.execute("SELECT * FROM generations WHERE state = ?", (state,)))
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        db.close()


def in_flight(state_db: Path) -> set[str]:
    """The states of the subjects that were not settled (where a kill can hurt)."""
    return {row.state for row in subject_rows(state_db)
            if not row.superseded and row.state not in SETTLED_STATES}


def temp_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.name.endswith(PART_SUFFIX)) if root.exists() \
        else []


def unsettled(state_db: Path, retries: int) -> list[str]:
    """Subjects a further pass would still move: active ones, and FAILED ones it re-trains."""
    left = []
    for row in subject_rows(state_db):
        if row.superseded:
            continue
        retrains = row.state == FAILED and row.task_status == "FAILED" and row.attempts <= retries
        if row.state not in SETTLED_STATES or retrains:
            left.append(f"{row.name}:{row.state}")
    return left


# --- the loop ---------------------------------------------------------------------------


class Soak:
    """One soak: the kill loop, the final passes, then :func:`verify`."""

    def __init__(self, workdir: Path, config: SoakConfig, emulator: EmulatorProcess) -> None:
        self.workdir = workdir
        self.config = config
        self.emulator = emulator
        self.job = write_workspace(workdir, emulator.base_url, config)
        self.state_db = workdir / "state" / "state.db"
        self.rng = random.Random(config.seed)
        self.report = SoakReport(subjects=config.subjects)
        self.names = subject_names(config.subjects)
        self._exit_codes: Counter[str] = Counter()
        self._in_flight: Counter[str] = Counter()
        self._graceful: Counter[str] = Counter()

    def run(self) -> SoakReport:
        started = time.monotonic()
        planned = self._interruptions_planned()
        waves = _split(self.names, self.config.waves or -(-planned // 3))
        per_wave = -(-planned // len(waves))
        since_wave = per_wave
        while self.report.kills < self.config.kills:
            if waves and since_wave >= per_wave:
                add_subjects(self.workdir, waves.pop(0), self.config.images, self.config.seed)
                since_wave = 0
            # With every wave in and its work done, a pass is idle: kill it early on.
            idle = not waves and not unsettled(self.state_db, self.config.max_training_retries)
            interrupted = self._interrupted_pass(self.report.passes + 1, idle=idle)
            # A pass that ended by itself had nothing left to do: bring the next wave now.
            since_wave = since_wave + 1 if interrupted else per_wave
        for wave in waves:
            add_subjects(self.workdir, wave, self.config.images, self.config.seed)
        self._final_passes()
        self.report.kills_in_flight = dict(self._in_flight)
        self.report.graceful_stops = dict(self._graceful)
        self.report.exit_codes = dict(self._exit_codes)
        verify(self.workdir, self.config, self.emulator, self.report)
        self.report.seconds = time.monotonic() - started
        return self.report

    def _interruptions_planned(self) -> int:
        every = self.config.graceful_every
        if every <= 1:
            return self.config.kills
        return self.config.kills * every // (every - 1)

    def _interrupted_pass(self, number: int, *, idle: bool) -> bool:
        """One pass, interrupted after a random delay; True if it was still running then."""
        process = start_pipeline(self.workdir, self.report.passes, "run", str(self.job),
                                 "--max-wait", "60")
        # The delay counts from the pass's start, not the interpreter's: how long Python
        # takes to import the pipeline depends on the machine's load, not on the pipeline.
        wait_for_pass_start(self.workdir, self.report.passes, process)
        self.report.passes += 1
        every = self.config.graceful_every
        low, high = self.config.kill_after
        delay = self.rng.uniform(low / 2, low) if idle else self.rng.uniform(low, high)
        try:
            code = process.wait(delay)
        except subprocess.TimeoutExpired:
            code = None
        if code is not None:  # it finished first: nothing to interrupt
            self._record_exit(code)
            return False
        if every and number % every == 0:
            self._graceful_stop(process, number)
            return True
        process.kill()
        process.wait()
        self.report.kills += 1
        self.report.generation_posts_cut += len(generations_in(self.state_db, "submitting"))
        states = in_flight(self.state_db)
        self._in_flight.update(states or {"nothing (idle pass)"})
        self.report.temp_files_after_kills += len(temp_files(self.workdir / "outbox"))
        self._check_integrity(f"after kill {self.report.kills}")
        return True

    def _graceful_stop(self, process: subprocess.Popen[bytes], number: int) -> None:
        signum = signal.SIGTERM if (number // self.config.graceful_every) % 2 else signal.SIGINT
        sent = time.monotonic()
        process.send_signal(signum)
        try:
            code = process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            self.report.problems.append(f"{signum.name}: the pass did not stop within 15 s")
            return
        name = signal.Signals(signum).name
        if code == GRACEFUL[signum]:
            outcome = f"{name}: exit {code}, state saved"
        elif code == -signum:
            # Before the run's handlers are in place (interpreter start-up) or after they
            # are gone (the pass was exiting), the default action ends the process, which a
            # shell reports as 128 + N too; the state is checked below all the same.
            outcome = f"{name}: ended by the signal outside the run's handlers"
        elif code in CLEAN_EXITS:
            outcome = f"{name}: the pass was already ending (exit {code})"
        else:
            outcome = f"{name}: exit {code}"
            self.report.problems.append(f"{name}: exit code {code}, expected {GRACEFUL[signum]}")
        self._graceful[outcome] += 1
        self.report.graceful_max_seconds = max(
            self.report.graceful_max_seconds, time.monotonic() - sent)
        self._check_integrity(f"after {name}")

    def _final_passes(self) -> None:
        for _ in range(self.config.final_passes):
            process = start_pipeline(self.workdir, self.report.passes, "run", str(self.job),
                                     "--max-wait", "120")
            self.report.passes += 1
            self._record_exit(process.wait(300))
            if not unsettled(self.state_db, self.config.max_training_retries):
                return

    def _record_exit(self, code: int) -> None:
        self._exit_codes[str(code)] += 1
        if code not in CLEAN_EXITS:
            log = self.workdir / "logs" / f"{self.report.passes - 1:03d}.err"
            self.report.problems.append(f"pass {self.report.passes - 1} exited {code} ({log})")

    def _check_integrity(self, when: str) -> None:
        if not self.state_db.exists():
            return
        with SqliteStore(self.state_db) as store:
            problems = store.integrity_problems()
        self.report.integrity_checks += 1
        self.report.problems += [f"state {when}: {problem}" for problem in problems]


def _split(names: list[str], waves: int) -> list[list[str]]:
    waves = max(1, min(waves, len(names)))
    size = -(-len(names) // waves)
    return [names[i:i + size] for i in range(0, len(names), size)]


# --- the checks -------------------------------------------------------------------------


def verify(workdir: Path, config: SoakConfig, emulator: EmulatorProcess,
           report: SoakReport) -> None:
    """Every check of the module docstring; figures and problems go into ``report``."""
    rows = subject_rows(workdir / "state" / "state.db")
    current = [row for row in rows if not row.superseded]
    report.states = dict(Counter(row.state for row in current))
    report.reasons = {row.name: row.error for row in current if row.error}
    if sorted(row.name for row in current) != sorted(subject_names(config.subjects)):
        report.problems.append(f"subjects in the state store: {len(current)} of {config.subjects}")
    for left in unsettled(workdir / "state" / "state.db", config.max_training_retries):
        report.problems.append(f"not settled after the final passes: {left}")
    verify_trainings(rows, emulator, report)
    with SqliteStore(workdir / "state" / "state.db") as store:
        verify_outbox(store, workdir / "outbox" / JOB, config.image_num, current, report)
    counters = emulator.counters()
    report.faults_injected = dict(counters["faults_injected"])
    report.generation_tasks = int(counters["generations_created"]["total"])
    with SqliteStore(workdir / "state" / "state.db") as store:
        every = [g for row in rows for g in store.generations(row.id)]
    report.generation_resends = sum(g.uncertain for g in every)
    report.generation_tasks_unrecorded = report.generation_tasks - sum(g.submissions for g in every)
    if report.generation_tasks_unrecorded > report.generation_posts_cut + report.generation_resends:
        report.problems.append(
            f"{report.generation_tasks_unrecorded} generation tasks were never recorded, more than"
            f" the {report.generation_posts_cut} POSTs cut by kills and the"
            f" {report.generation_resends} re-sends after lost answers")
    with SqliteStore(workdir / "state" / "state.db") as store:
        verify_ledger(store, counters, report)
    report.temp_files_at_end = len(temp_files(workdir / "outbox"))
    if report.temp_files_at_end:
        report.problems.append(f"{report.temp_files_at_end} temp file(s) left in the outbox")
    with SqliteStore(workdir / "state" / "state.db") as store:
        report.problems += [f"state at the end: {p}" for p in store.integrity_problems()]
    report.integrity_checks += 1


def verify_ledger(store: StateStore, counters: dict[str, Any], report: SoakReport) -> None:
    """The ledger, written with each intent before its POST, never under-counts."""
    spent = store.spent(JOB)
    report.ledger_trainings, report.ledger_images = spent.training_count, spent.image_count
    report.service_images = int(counters["images_requested"])
    made = int(counters["trainings_created"]["total"])
    if spent.training_count < made or spent.image_count < report.service_images:
        report.problems.append(
            f"the ledger counts {spent.training_count} trainings and {spent.image_count} "
            f"pictures, less than the service made ({made}, {report.service_images})")


def verify_trainings(rows: list[SubjectRow], emulator: EmulatorProcess,
                     report: SoakReport) -> None:
    """No training name created twice; each accounted for by ``rows`` (every version)."""
    trainings = emulator.trainings()
    by_name: dict[str, list[dict[str, Any]]] = {}
    for training in trainings:
        by_name.setdefault(training["name"], []).append(training)
    report.trainings_paid = len(trainings)
    report.duplicate_trainings = sum(len(same) - 1 for same in by_name.values())
    for name, same in by_name.items():
        if len(same) > 1:
            report.problems.append(f"training {name} was created {len(same)} times")
    expected: set[str] = set()
    for row in rows:
        names = [training_name(JOB, row, attempt) for attempt in range(1, row.attempts + 1)]
        expected.update(names)
        report.retrainings_after_failed += max(0, len(names) - 1)
        for attempt, name in enumerate(names, start=1):
            found = by_name.get(name, [])
            if not found and row.state not in (FAILED, REJECTED, CANCELED):
                report.problems.append(f"{row.name}: training {name} is not on the service")
            last = attempt == len(names)
            if found and not last and found[0]["status"] != "FAILED":
                report.problems.append(
                    f"{row.name}: re-trained although {name} was {found[0]['status']}")
            if found and last and row.task_id and found[0]["task_id"] != row.task_id:
                report.problems.append(f"{row.name}: state points at another task than {name}")
    for name in sorted(by_name.keys() - expected):
        report.problems.append(f"training {name} is not accounted for by the state store")
    if int(emulator.counters()["trainings_created"]["total"]) != len(trainings):
        report.problems.append("the counters and the task list disagree on trainings created")


def verify_outbox(store: StateStore, root: Path, image_num: int, current: list[SubjectRow],
                  report: SoakReport) -> None:
    """Each prompt of each DONE subject in ``current`` has its pictures under ``root``
    (``outbox/<job>``) exactly once, with sidecars, and nothing else is there."""
    for row in current:
        if row.state != DONE:
            continue
        place = SubjectOutbox(root, row.name, row.version)
        folder = place.folder
        lora = place.lora_name()
        expected = {lora, lora.replace(".safetensors", ".json")} if row.model_name else set()
        for generation in store.generations(row.id):
            report.prompts += 1
            if generation.state != GEN_DONE:
                report.problems.append(
                    f"{row.name}/{generation.slug}: {generation.state} ({generation.error})")
                continue
            for number in range(1, image_num + 1):
                report.pictures_expected += 1
                picture = folder / generation.slug / place.picture_name(
                    generation.slug, number, "png")
                sidecar = picture.with_suffix(".json")
                expected |= {f"{generation.slug}/{picture.name}",
                             f"{generation.slug}/{sidecar.name}"}
                if _picture_ok(picture, sidecar, row):
                    report.pictures_present += 1
                else:
                    report.results_lost += 1
                    report.problems.append(f"lost: {picture.relative_to(root)}")
        on_disk = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()
                   and not VERSION_FOLDER.match(p.relative_to(folder).parts[0])}
        for stray in sorted(on_disk - expected):
            report.problems.append(f"stray file in the outbox: {row.name}/{stray}")


def _picture_ok(picture: Path, sidecar: Path, row: SubjectRow) -> bool:
    if not picture.is_file() or not sidecar.is_file():
        return False
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
        with Image.open(picture) as image:
            image.verify()
    except (ValueError, OSError):
        return False
    return bool(data.get("file") == picture.name and data.get("subject") == row.name)


# --- entry points -----------------------------------------------------------------------


def run_soak(config: SoakConfig, workdir: Path) -> SoakReport:
    """The whole soak in ``workdir`` (which should be empty)."""
    workdir.mkdir(parents=True, exist_ok=True)
    flags: dict[str, Any] = {"seed": config.seed, **EMULATOR_TIMINGS, **config.faults}
    with emulator_process(workdir, flags) as emulator:
        return Soak(workdir, config, emulator).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.reliability.harness",
        description="Kill the pipeline at random moments against a faulty emulator, then "
                    "check that nothing was paid twice or lost.")
    defaults = SoakConfig()
    parser.add_argument("--subjects", type=int, default=defaults.subjects)
    parser.add_argument("--kills", type=int, default=defaults.kills)
    parser.add_argument("--images", type=int, default=defaults.images)
    parser.add_argument("--prompts", type=int, default=defaults.prompts)
    parser.add_argument("--image-num", type=int, default=defaults.image_num)
    parser.add_argument("--waves", type=int, default=defaults.waves,
                        help="subjects arrive in this many waves (0: one per 3 interruptions)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--graceful-every", type=int, default=defaults.graceful_every,
                        help="every Nth interruption is SIGTERM/SIGINT (0: SIGKILL only)")
    parser.add_argument("--workdir", type=Path, help="keep everything here (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    config = SoakConfig(
        subjects=args.subjects, kills=args.kills, images=args.images, prompts=args.prompts,
        image_num=args.image_num, waves=args.waves, seed=args.seed,
        graceful_every=args.graceful_every,
    )
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lora-soak-"))
    report = run_soak(config, workdir)
    sys.stdout.write("\n".join(report.lines()) + f"\nworkdir: {workdir}\n")
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2, sort_keys=True) + "\n")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
