"""The commands with the state in PostgreSQL (``LORA_STATE_URL``): a pass, then ``status``,
``spend`` and ``retry`` from another host's shell, which finds the same state."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from pipeline.emulator import EmulatorHandle
from pipeline.store.coordination import Coordination
from pipeline.store.postgres import PostgresStore
from pipeline.store.states import FAILED
from pipeline.views.summary import EXIT_OK
from tests.cli.test_commands import cli, config_file, served  # noqa: F401 (a fixture)
from tests.conftest import force_state, write_job
from tests.engine.folders import write_subjects


def _config(tmp_path: Path, base_url: str, url: str, folder: str) -> Path:
    """Each host's own settings file, without a state folder of its own."""
    (tmp_path / folder).mkdir()
    config = config_file(tmp_path / folder, base_url, state_dir=False)
    with config.open("a", encoding="utf-8") as out:
        out.write(f"LORA_STATE_URL={url}\n")
    return config


def _run_on_host1(tmp_path: Path, base_url: str, url: str, subjects: int,
                  monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A job of ``subjects`` run to the end by a first host; its job file and config."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    job = write_job(tmp_path, prompts=1, image_num=1)
    write_subjects(tmp_path / "inbox", subjects, 3)
    config = _config(tmp_path, base_url, url, "host1")
    assert cli(config, "run", str(job)) == EXIT_OK
    return job, config


def test_every_host_sees_the_same_state(
    tmp_path: Path, served: EmulatorHandle, postgres_url: str,  # noqa: F811
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    job, _ = _run_on_host1(tmp_path, served.base_url, postgres_url, 2, monkeypatch)
    capsys.readouterr()
    other = _config(tmp_path, served.base_url, postgres_url, "host2")
    assert cli(other, "status", str(job), "--json") == EXIT_OK
    data = json.loads(capsys.readouterr().out)
    assert {s["name"]: s["state"] for s in data["subjects"]} == {"alice": "done", "bob": "done"}
    assert not (tmp_path / "outbox" / "test" / ".lora-pipeline" / "state.db").exists()
    assert cli(other, "spend", str(job), "--json") == EXIT_OK
    assert "alice" in capsys.readouterr().out
    assert data["workers"] == []  # the pass is over: no worker is alive
    with PostgresStore(postgres_url) as store:
        Coordination(store, "test", "alpha:4021:aa", ttl=60.0).join(
            host="alpha", pid=4021, now=time.time() - 300)  # seen 5 min ago: gone
        Coordination(store, "test", "beta:77:bb", ttl=60.0).join(
            host="beta", pid=77, now=time.time())
    assert cli(other, "status", str(job), "--json") == EXIT_OK
    [beta] = json.loads(capsys.readouterr().out)["workers"]
    assert (beta["host"], beta["pid"]) == ("beta", 77)
    assert cli(other, "status", str(job)) == EXIT_OK
    assert re.search(r"^workers: beta \(pid 77, up \d+ s\)$", capsys.readouterr().out, re.M)


def test_a_request_is_queued_while_a_worker_is_alive_and_done_at_once_when_none_is(
    tmp_path: Path, served: EmulatorHandle, postgres_url: str,  # noqa: F811
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    job, config = _run_on_host1(tmp_path, served.base_url, postgres_url, 1, monkeypatch)
    with PostgresStore(postgres_url) as store:
        alice = store.latest("test", "alice")
        assert alice is not None
        force_state(store, alice.id, now=time.time(), state=FAILED, error="the service failed")
        worker = Coordination(store, "test", "elsewhere:1:aa", ttl=60.0)
        worker.join(host="elsewhere", pid=1, now=time.time())
        capsys.readouterr()
        assert cli(config, "retry", str(job), "alice") == EXIT_OK
        assert "queued" in capsys.readouterr().out
        assert len(store.open_requests("test")) == 1  # for the live worker to act on
        assert store.latest("test", "alice").state == FAILED
        worker.leave()
        store.finish_request(store.open_requests("test")[0].id, now=time.time(), outcome="-")
        assert cli(config, "retry", str(job), "alice") == EXIT_OK
        assert "queued" not in capsys.readouterr().out
        assert store.open_requests("test") == []
        assert store.latest("test", "alice").state != FAILED
