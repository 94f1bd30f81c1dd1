"""Every command and exit code, through ``main`` as a user calls it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.cli.commands import main
from pipeline.emulator import EmulatorConfig, EmulatorHandle, serve_emulator
from pipeline.store.lock import job_lock
from pipeline.store.sqlite import MIGRATIONS, SqliteStore
from pipeline.store.states import VALIDATED
from pipeline.views.summary import (
    EXIT_BAD_CREDENTIALS,
    EXIT_FAILED,
    EXIT_LOCK_HELD,
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_SIGTERM,
    EXIT_USAGE,
)
from tests.conftest import EMULATOR_KEY, FAST_EMULATOR, write_job
from tests.engine.folders import write_bad_subjects, write_subjects


@pytest.fixture
def served() -> Iterator[EmulatorHandle]:
    """The emulator on its own thread and loop, since ``main`` runs its own loop."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, object] = {}

    async def serve() -> None:
        holder["stop"] = stop = asyncio.Event()
        config = EmulatorConfig(api_keys=[EMULATOR_KEY], **FAST_EMULATOR)
        async with serve_emulator(config) as handle:
            holder["handle"] = handle
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    yield holder["handle"]  # type: ignore[misc]
    loop.call_soon_threadsafe(holder["stop"].set)  # type: ignore[attr-defined]
    thread.join(10)
    loop.close()


def config_file(tmp_path: Path, base_url: str, key: str = EMULATOR_KEY, *,
                state_dir: bool = True) -> Path:
    """Settings for the emulator; the state in ``tmp_path/state`` (``LORA_STATE_DIR``), or
    in its default place beside the outbox when ``state_dir`` is False."""
    path = tmp_path / "config.env"
    override = f"LORA_STATE_DIR={tmp_path / 'state'}\n" if state_dir else ""
    path.write_text(
        f"LORA_API_KEY={key}\nLORA_BASE_URL={base_url}\n{override}"
        "LORA_POLL_INTERVAL_MIN=0.02\nLORA_POLL_INTERVAL_MAX=0.05\n"
        "LORA_GENERATION_POLL_INTERVAL=0.02\nLORA_RETRY_BASE_DELAY=0.01\n"
        "LORA_IMAGES_PER_MINUTE=1000\nLORA_LOG_FORMAT=json\n"
    )
    return path


@pytest.fixture
def project(tmp_path: Path, served: EmulatorHandle) -> tuple[Path, Path]:
    """A job with two good subjects, and settings pointing at the emulator."""
    job = write_job(tmp_path)
    write_subjects(tmp_path / "inbox", 2, 3)
    return job, config_file(tmp_path, served.base_url)


def cli(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


def test_run_then_status(project, capsys) -> None:
    job, config = project
    assert cli(config, "run", str(job)) == EXIT_OK
    assert cli(config, "status", str(job)) == EXIT_OK
    out = capsys.readouterr().out
    assert "alice" in out and "bob" in out and "done" in out
    assert "\x1b[" not in out  # no terminal: no colour codes


def test_logs_are_json_lines_without_the_key(project, capsys) -> None:
    job, config = project
    cli(config, "run", str(job))
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(line["event"] == "train.submitted" for line in lines)
    assert EMULATOR_KEY not in err


def test_rejected_input_exits_3(tmp_path, served, capsys) -> None:
    job = write_job(tmp_path)
    write_bad_subjects(tmp_path / "inbox")
    assert cli(config_file(tmp_path, served.base_url), "run", str(job)) == EXIT_REJECTED
    assert "51 images" in capsys.readouterr().out


def test_failed_training_exits_4(project, served) -> None:
    job, config = project
    served.emulator.config.fault_training_failed = 1.0
    assert cli(config, "run", str(job)) == EXIT_FAILED


def test_bad_key_exits_5_with_one_clear_message(tmp_path, served, capsys) -> None:
    job = write_job(tmp_path)
    write_subjects(tmp_path / "inbox", 1, 3)
    config = config_file(tmp_path, served.base_url, key="sk-not-the-key-000")
    assert cli(config, "run", str(job)) == EXIT_BAD_CREDENTIALS
    out = capsys.readouterr()
    assert "refused the key" in out.err and "refused the key" not in out.out
    assert "sk-not-the-key" not in out.out + out.err


@pytest.mark.parametrize("command", ["run", "watch"])
@pytest.mark.parametrize("line", ["", "LORA_API_KEY=\n", "LORA_API_KEY=   \n"])
def test_a_missing_or_empty_key_is_refused_before_any_request_or_intake(
        tmp_path, served, capsys, monkeypatch, line, command) -> None:
    monkeypatch.delenv("LORA_API_KEY", raising=False)
    job = write_job(tmp_path)
    write_subjects(tmp_path / "inbox", 1, 3)
    config = config_file(tmp_path, served.base_url)
    config.write_text(config.read_text().replace(f"LORA_API_KEY={EMULATOR_KEY}\n", line))
    assert cli(config, command, str(job)) == EXIT_BAD_CREDENTIALS
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "LORA_API_KEY" in captured.err and str(config) in captured.err
    assert served.emulator.counters_snapshot()["requests"] == {}
    assert not (tmp_path / "state").exists() and not (tmp_path / "outbox").exists()


def test_a_config_file_that_does_not_exist_is_an_error(tmp_path, capsys) -> None:
    job = write_job(tmp_path)
    missing = tmp_path / "conifg.env"
    assert cli(missing, "status", str(job)) == EXIT_USAGE
    captured = capsys.readouterr()
    assert str(missing) in captured.err and "no such file" in captured.err
    assert captured.out == ""


def test_overlapping_run_exits_6_and_does_nothing(project, served, capsys) -> None:
    job, config = project
    with job_lock(job.parent / "state", "test"):
        assert cli(config, "run", str(job)) == EXIT_LOCK_HELD
    assert "another run" in capsys.readouterr().err
    assert served.emulator.counters_snapshot()["trainings_created"]["total"] == 0


def test_job_file_error_exits_2_naming_file_and_field(tmp_path, served, capsys) -> None:
    job = write_job(tmp_path)
    job.write_text(job.read_text().replace("[generation]", "[generation]\nlora_strength = 1.5"))
    assert cli(config_file(tmp_path, served.base_url), "run", str(job)) == EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "test.toml" in captured.err and "generation.lora_strength" in captured.err


def test_bad_setting_exits_2(tmp_path, capsys) -> None:
    config = tmp_path / "config.env"
    config.write_text("LORA_UPLOAD_CONCURRENCY=zero\n")
    assert main(["--config", str(config), "status", "x.toml"]) == EXIT_USAGE
    assert "upload_concurrency" in capsys.readouterr().err


def test_validate_folder_inbox_and_job(tmp_path, capsys) -> None:
    write_subjects(tmp_path / "inbox", 1, 10)
    config = tmp_path / "config.env"
    config.write_text("")
    alice = str(tmp_path / "inbox" / "alice")
    # a person by default: each photo must show a face, and these pictures show none
    assert main(["--config", str(config), "validate", alice]) == EXIT_REJECTED
    out = capsys.readouterr().out
    assert "alice: rejected: 0 photos accepted, 10 refused" in out and "no face found" in out
    assert main(["--config", str(config), "validate", alice, "--class-word", "thing"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "alice: accepted: 10 photos accepted, 0 refused" in out
    assert "  ok       alice_01.png  (sharpness " in out and "total:" not in out
    write_bad_subjects(tmp_path / "inbox")
    assert main(["--config", str(config), "validate", str(tmp_path / "inbox"),
                 "--class-word", "thing"]) == EXIT_REJECTED
    out = capsys.readouterr().out
    assert "too_many: rejected" in out and "51 images, at most 50" in out
    assert "mixed_bag: accepted: 3 photos accepted, 2 refused" in out
    assert "refused  empty.jpg" in out and "empty.jpg is empty" in out
    assert "total: 3 subjects, 2 accepted, 1 rejected" in out
    job = write_job(tmp_path)  # its [photos] look for no faces
    assert main(["--config", str(config), "validate", str(job)]) == EXIT_REJECTED
    out = capsys.readouterr().out
    assert "alice: accepted: 10 photos accepted" in out and "51 images, at most 50" in out
    assert main(["--config", str(config), "validate", str(tmp_path / "nowhere")]) == EXIT_USAGE


def test_cancel_and_retry(project, served, capsys) -> None:
    job, config = project
    served.emulator.config.fault_training_failed = 1.0
    cli(config, "run", str(job))
    served.emulator.config.fault_training_failed = 0.0
    assert cli(config, "retry", str(job), "alice") == EXIT_OK
    assert "trained again" in capsys.readouterr().out
    assert cli(config, "cancel", str(job), "bob") == EXIT_USAGE  # already failed
    assert cli(config, "run", str(job)) == EXIT_OK
    with SqliteStore(job.parent / "state" / "state.db") as store:
        assert store.latest("test", "alice").state == "done"
        assert store.latest("test", "bob").state == "failed"
    assert cli(config, "retry", str(job), "nobody") == EXIT_USAGE


def test_cancel_stops_further_work(project, served, capsys) -> None:
    job, config = project
    served.emulator.config.train_seconds = 60
    cli(config, "run", str(job), "--max-wait", "2")  # long enough to submit, under load too
    assert cli(config, "cancel", str(job), "alice") == EXIT_OK
    assert "may still run on the service" in capsys.readouterr().out
    before = served.emulator.counters_snapshot()["generations_created"]["total"]
    served.emulator.config.train_seconds = 0.1
    cli(config, "run", str(job))
    with SqliteStore(job.parent / "state" / "state.db") as store:
        assert store.latest("test", "alice").state == "canceled"
        assert store.latest("test", "bob").state == "done"
    assert served.emulator.counters_snapshot()["generations_created"]["total"] - before == 2


def test_a_request_while_a_pass_holds_the_job_is_queued_for_it(project, served, capsys) -> None:
    job, config = project
    cli(config, "run", str(job))
    with job_lock(job.parent / "state", "test"):  # a pass (watch, run) is working
        assert cli(config, "regenerate", str(job), "alice", "--prompt", "01-take-1") == EXIT_OK
        assert "regenerate queued" in capsys.readouterr().out
        assert cli(config, "cancel", str(job), "bob") == EXIT_OK
    with SqliteStore(job.parent / "state" / "state.db") as store:
        queued = store.open_requests("test")
        assert [(r.subject, r.action, r.arguments) for r in queued] == [
            ("alice", "regenerate", {"prompts": ["01-take-1"], "new": False}),
            ("bob", "cancel", {})]
        assert store.latest("test", "bob").state == "done"  # nothing done behind the pass


def test_regenerate_new_prompts_of_the_job_for_a_done_subject(project, served, capsys) -> None:
    job, config = project
    cli(config, "run", str(job))
    before = served.emulator.counters_snapshot()["generations_created"]["total"]
    job.write_text(job.read_text().replace('prompts = [', 'prompts = ["{instance_prompt}, new", '))
    assert cli(config, "regenerate", str(job), "alice", "--new") == EXIT_OK
    assert "1 prompt(s) will be generated (1 new)" in capsys.readouterr().out
    assert cli(config, "regenerate", str(job), "alice", "--new") == EXIT_USAGE  # generating
    assert cli(config, "run", str(job)) == EXIT_OK
    assert served.emulator.counters_snapshot()["generations_created"]["total"] == before + 1


def test_demo_runs_the_whole_flow(tmp_path, capsys) -> None:
    assert main(["demo", "--workdir",
                 str(tmp_path / "demo")]) == EXIT_OK
    out = capsys.readouterr().out
    # alice, bob, teapot, mixed_bag and photo_gate train; too_many is refused as a whole
    assert "Trainings paid for: 5" in out
    pictures = list((tmp_path / "demo" / "outbox" / "demo").rglob("*.png"))
    assert len(pictures) == 5 * 3 * 2  # two txt2img prompts and one img2img, 2 pictures each
    from_reference = [p for p in pictures if "sunset-colours" in p.name]
    assert len(from_reference) == 5 * 2
    sidecar = json.loads(from_reference[0].with_suffix(".json").read_text())
    assert sidecar["endpoint"] == "img2img"
    report = tmp_path / "demo" / "outbox" / "demo" / "report.html"
    assert report.is_file() and f"Report: {report}" in out.replace("\n", "")
    # The state lives with the job's outbox: status on the demo's job file finds it.
    blank = tmp_path / "blank.env"
    blank.write_text("")
    assert main(["--config", str(blank), "status",
                 str(tmp_path / "demo" / "demo.toml")]) == EXIT_OK
    assert "demo/alice: done" in capsys.readouterr().out


def _pipeline(*args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORA_")}
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args], cwd=cwd, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def test_emulator_command_serves_until_sigterm(tmp_path) -> None:
    process = _pipeline("emulator", "--port", "0", "--train-seconds", "1", cwd=tmp_path)
    try:
        line = process.stdout.readline()
        assert "listening on http://127.0.0.1:" in line
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=10)
    assert process.returncode == 0


def test_sigterm_stops_cleanly_and_the_next_run_continues(project, served) -> None:
    job, config = project
    served.emulator.config.train_seconds = 60
    process = _pipeline("--config", str(config), "run", str(job), cwd=job.parent)
    try:
        for line in process.stderr:
            if '"train.submitted"' in line and "bob" in line:
                break
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == EXIT_SIGTERM, err
    served.emulator.config.train_seconds = 0.1
    assert cli(config, "run", str(job)) == EXIT_OK
    assert served.emulator.counters_snapshot()["trainings_created"]["total"] == 2


def test_run_writes_the_report_and_report_rewrites_it(project, capsys) -> None:
    job, config = project
    assert cli(config, "run", str(job)) == EXIT_OK
    html = job.parent / "outbox" / "test" / "report.html"
    data = json.loads((job.parent / "outbox" / "test" / "report.json").read_text())
    assert html.exists() and f"report:  {html}" in capsys.readouterr().out
    assert data["counts"] == {"done": 2}
    html.unlink()
    assert cli(config, "report", str(job)) == EXIT_OK
    assert html.exists()


def test_ctrl_c_before_the_run_started_exits_130_without_a_traceback(tmp_path, monkeypatch,
                                                                     capsys) -> None:
    import pipeline.cli.commands

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.cli.commands, "load_job", interrupted)
    config = config_file(tmp_path, "http://127.0.0.1:9")
    assert main(["--config", str(config), "run", "job.toml"]) == 130
    assert "Traceback" not in capsys.readouterr().err


# --- where the state lives, and commands that only look at it ------------------------------


def _counters(served: EmulatorHandle) -> dict:
    snapshot = served.emulator.counters_snapshot()
    return {k: snapshot[k] for k in ("uploads", "trainings_created", "generations_created",
                                     "images_downloaded", "models_downloaded")}


def test_runs_from_two_folders_share_one_state_and_one_report(tmp_path, served, monkeypatch,
                                                              capsys) -> None:
    """The user's report: cron and a shell in another folder ran the same job."""
    job = write_job(tmp_path / "project")
    write_subjects(tmp_path / "project" / "inbox", 2, 3)
    config = config_file(tmp_path, served.base_url, state_dir=False)
    for folder in ("cron", "shell"):
        (tmp_path / folder).mkdir()
    monkeypatch.chdir(tmp_path / "cron")
    assert cli(config, "run", str(job)) == EXIT_OK
    before = _counters(served)
    monkeypatch.chdir(tmp_path / "shell")
    assert cli(config, "run", str(job)) == EXIT_OK
    assert cli(config, "status", str(job)) == EXIT_OK
    assert _counters(served) == before  # nothing uploaded, trained or generated again
    outbox = tmp_path / "project" / "outbox" / "test"
    data = json.loads((outbox / "report.json").read_text())
    assert data["counts"] == {"done": 2}
    assert (outbox / ".lora-pipeline" / "state.db").is_file()
    assert [list((tmp_path / f).rglob("*")) for f in ("cron", "shell")] == [[], []]
    assert "no subjects yet" not in capsys.readouterr().out


@pytest.mark.parametrize("override", [False, True], ids=["default place", "LORA_STATE_DIR"])
def test_status_and_report_of_a_job_never_run_create_nothing(tmp_path, monkeypatch, capsys,
                                                             override) -> None:
    job = write_job(tmp_path / "project")
    config = config_file(tmp_path, "http://127.0.0.1:9", state_dir=override)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    before = set(tmp_path.rglob("*"))
    assert cli(config, "status", str(job)) == EXIT_OK
    out = capsys.readouterr().out
    where = tmp_path / "state" if override else tmp_path / "project/outbox/test/.lora-pipeline"
    assert "no subjects yet" in out and str(where / "state.db") in out
    assert cli(config, "report", str(job)) == EXIT_OK
    assert "no subjects yet" in capsys.readouterr().out
    assert set(tmp_path.rglob("*")) == before


def _one_subject(path: Path) -> None:
    with SqliteStore(path) as store:
        store.add_version("test", "alice", "fp", "subject", state=VALIDATED, now=1.0)


def test_status_and_report_answer_while_a_pass_holds_the_write_lock(tmp_path, capsys) -> None:
    job = write_job(tmp_path)
    config = config_file(tmp_path, "http://127.0.0.1:9")
    _one_subject(tmp_path / "state" / "state.db")
    pass_ = sqlite3.connect(tmp_path / "state" / "state.db", isolation_level=None, timeout=0)
    pass_.execute("BEGIN IMMEDIATE")
    pass_.execute("UPDATE subjects SET state = 'uploading'")
    try:
        assert cli(config, "status", str(job)) == EXIT_OK
        assert "alice" in capsys.readouterr().out
        assert cli(config, "report", str(job)) == EXIT_OK
    finally:
        pass_.execute("ROLLBACK")
        pass_.close()
    data = json.loads((tmp_path / "outbox" / "test" / "report.json").read_text())
    assert data["counts"] == {"validated": 1}


def test_status_of_an_older_state_file_says_to_run_a_pass(tmp_path, capsys) -> None:
    job = write_job(tmp_path)
    config = config_file(tmp_path, "http://127.0.0.1:9")
    path = tmp_path / "state" / "state.db"
    path.parent.mkdir()
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(MIGRATIONS[0])
    db.execute("PRAGMA user_version = 1")
    db.close()
    assert cli(config, "status", str(job)) == EXIT_USAGE
    out = capsys.readouterr().err
    assert str(path) in out and "run a pass" in out
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1  # not upgraded by a look
    db.close()


@pytest.mark.parametrize("lost", ["missing", "empty"])
def test_a_lost_state_file_beside_results_is_refused_and_nothing_is_paid(tmp_path, served,
                                                                         capsys, lost) -> None:
    job = write_job(tmp_path)
    write_subjects(tmp_path / "inbox", 1, 3)
    config = config_file(tmp_path, served.base_url, state_dir=False)
    assert cli(config, "run", str(job)) == EXIT_OK
    state = tmp_path / "outbox" / "test" / ".lora-pipeline"
    for file in state.glob("state.db*"):
        file.unlink()
    if lost == "empty":
        (state / "state.db").write_bytes(b"")
    requests = served.emulator.counters_snapshot()["requests"]
    capsys.readouterr()
    for command in ("run", "status", "report"):
        assert cli(config, command, str(job)) == EXIT_USAGE, command
        out = " ".join(capsys.readouterr().err.split())  # the message as one line
        assert f"{state / 'state.db'} is {lost}" in out
        assert f"{tmp_path / 'outbox' / 'test'} already holds results" in out
        assert "Restore the state file" in out and "to start afresh" in out
    assert served.emulator.counters_snapshot()["requests"] == requests  # nothing sent at all
    assert (state / "state.db").exists() == (lost == "empty")


def test_a_corrupt_state_file_gives_a_message_not_a_traceback(tmp_path, served, capsys) -> None:
    job = write_job(tmp_path)
    write_subjects(tmp_path / "inbox", 1, 3)
    config = config_file(tmp_path, served.base_url)
    path = tmp_path / "state" / "state.db"
    path.parent.mkdir()
    path.write_bytes(b"\x00garbage where the state was\n" * 300)
    for command in ("run", "status", "report", "cancel"):
        args = (command, str(job), "alice") if command == "cancel" else (command, str(job))
        assert cli(config, *args) == EXIT_USAGE, command
        captured = capsys.readouterr()
        out = " ".join(captured.err.split())
        assert str(path) in out and "not a sound state database" in out, command
        assert "Restore it from a backup" in out
        assert "Traceback" not in captured.out + captured.err
    assert served.emulator.counters_snapshot()["requests"] == {}


def test_validate_without_a_job_reads_each_folders_subject_toml(tmp_path, capsys) -> None:
    from tests.inputs import photos

    no_faces = [photos.chelsea(), photos.coffee(), photos.chelsea().rotate(90, expand=True)]
    for name in ("teapot", "alice"):
        folder = tmp_path / "inbox" / name
        folder.mkdir(parents=True)
        for index, picture in enumerate(no_faces):
            (folder / f"{name}_{index}.jpg").write_bytes(photos.jpeg(picture))
    (tmp_path / "inbox" / "teapot" / "subject.toml").write_text('class_word = "teapot"\n')
    code = main(["validate", str(tmp_path / "inbox")])

    out = capsys.readouterr().out
    assert code == EXIT_REJECTED  # alice is a person: her faceless pictures are refused
    assert "teapot: accepted: 3 photos accepted, 0 refused" in out
    assert "alice: rejected: 0 photos accepted, 3 refused" in out
