"""Several workers share one job through PostgreSQL: each subject is driven by one of them,
nothing is paid twice, and a dead worker's subjects are taken over once its leases expire."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pydantic import SecretStr
from structlog.testing import capture_logs

from pipeline.clock import ManualClock, SystemClock
from pipeline.emulator import EmulatorHandle
from pipeline.engine.drivers import DRIVEN_STATES, Drivers
from pipeline.engine.runner import Runner
from pipeline.engine.work_share import SharedWorker
from pipeline.errors import StateUnreachable
from pipeline.jobfile.loading import load_job
from pipeline.store.coordination import Coordination
from pipeline.store.postgres import PostgresStore
from pipeline.store.states import DONE, GENERATING
from pipeline.views.summary import EXIT_OK
from tests.conftest import fast_settings, write_job
from tests.engine.folders import write_subjects


def _settings(emulator: EmulatorHandle, tmp_path: Path, url: str, **more: Any) -> Any:
    return fast_settings(emulator.base_url, tmp_path / "state", state_url=SecretStr(url),
                         **more)


def _pictures(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "outbox" / "test").rglob("*.png"))


async def test_two_workers_share_a_job_and_pay_once_for_each_subject(
    tmp_path: Path, emulator: EmulatorHandle, postgres_url: str, monkeypatch: Any
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    job = load_job(write_job(tmp_path, prompts=2, image_num=1))
    names = write_subjects(tmp_path / "inbox", 6, 3)
    settings = _settings(emulator, tmp_path, postgres_url)
    results = await asyncio.gather(
        Runner(job, settings).run_once(max_wait=30), Runner(job, settings).run_once(max_wait=30)
    )
    with PostgresStore(postgres_url) as store:
        rows = store.subjects("test")
        assert sorted(r.name for r in rows) == sorted(names)
        assert {r.state for r in rows} == {DONE}
        ledger = store.ledger("test")
    counters = emulator.emulator.counters_snapshot()
    assert counters["trainings_created"]["total"] == len(names)
    assert len([e for e in ledger if e.endpoint == "training"]) == len(names)
    assert len(_pictures(tmp_path)) == len(names) * 2  # every picture once
    assert all(r.exit_code == EXIT_OK for r in results)


async def test_a_dead_workers_subjects_wait_for_its_lease_then_are_taken_over(
    tmp_path: Path, emulator: EmulatorHandle, postgres_url: str, monkeypatch: Any
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    job = load_job(write_job(tmp_path, prompts=1, image_num=1))
    write_subjects(tmp_path / "inbox", 2, 3)
    settings = _settings(emulator, tmp_path, postgres_url)
    # A first pass takes the folders in and stops at once; then a worker that is about to
    # die leases alice.
    await Runner(job, settings).run_once(max_wait=0)
    with PostgresStore(postgres_url) as store:
        alice = store.latest("test", "alice")
        assert alice is not None and alice.state in DRIVEN_STATES
        dead = Coordination(store, "test", "dead-host:1:aa", ttl=60.0)
        assert dead.claim(DRIVEN_STATES, now=time.time(), only=[alice.id]) == [alice.id]
        await Runner(job, settings).run_once(max_wait=30)
        # Not this worker's to drive: nothing generated (the job's one poller may still
        # have settled its training, if the first pass had submitted it).
        assert store.subject(alice.id).state not in (GENERATING, DONE)
        assert store.outputs(alice.id) == []
        assert store.latest("test", "bob").state == DONE
        # Its lease expires (the dead worker's heartbeat stopped): the next pass takes over,
        # and removes the temp file the dead worker was writing in alice's folder.
        left = tmp_path / "outbox" / "test" / "alice" / ".alice.png.0a1b2c.part"
        left.parent.mkdir(parents=True, exist_ok=True)
        left.write_bytes(b"half a picture")
        store._db.execute("UPDATE leases SET expires_at = 0 WHERE owner = ?", (dead.owner,))
        await Runner(job, settings).run_once(max_wait=30)
        assert store.subject(alice.id).state == DONE
        assert not left.exists()
    assert emulator.emulator.counters_snapshot()["trainings_created"]["total"] == 2


async def test_a_round_claims_in_one_transaction_and_starts_only_its_own_subjects(
    postgres_url: str,
) -> None:
    """Most subjects other workers': a round is one claim, not one per subject
    (a benchmark counted 6,800 claim transactions before)."""
    with PostgresStore(postgres_url, owner="me") as store:
        ids = [store.add_version("test", f"s{n:03}", "fp", "subject", state="validated",
                                 now=1.0).id for n in range(9)]
        others = Coordination(store, "test", "other", ttl=60.0)
        others.join(host="h", pid=1, now=time.time())
        others.claim(DRIVEN_STATES, now=time.time(), only=ids[:6])
        worker = SharedWorker(store, "test", SystemClock(), ttl=60.0)
        claims: list[int] = []
        real_claim = worker.claim

        def counted(rows: Any, states: Any) -> Any:
            claims.append(len(rows))
            return real_claim(rows, states)

        worker.claim = counted  # type: ignore[method-assign]
        started: list[str] = []
        drivers = Drivers(worker)
        drivers._start = lambda services, subject: started.append(subject.name)  # type: ignore[method-assign]
        services = SimpleNamespace(ctx=SimpleNamespace(store=store, job_name="test"))
        drivers.start_all(services)  # type: ignore[arg-type]
        assert claims == [9] and started == ["s006", "s007", "s008"]
        drivers.start_all(services)  # type: ignore[arg-type]
        assert claims == [9, 6] and started == ["s006", "s007", "s008"] * 2


async def test_one_failed_renewal_is_tried_again_before_the_leases_lapse(
    postgres_url: str,
) -> None:
    clock = ManualClock()
    with PostgresStore(postgres_url, owner="me") as store:
        worker = SharedWorker(store, "test", clock, ttl=60.0)
        coordination = worker._coordination
        real, calls = coordination.renew, []

        def flaky(*, now: float) -> set[int]:
            calls.append(now)
            if len(calls) == 1:
                raise StateUnreachable("the connection was lost")
            return real(now=now)

        coordination.renew = flaky  # type: ignore[method-assign]
        lost: list[set[int]] = []
        beating = asyncio.create_task(worker.heartbeat(lost.append))
        for step in (20.0, 6.0):  # a third of the lease, then a tenth
            await asyncio.sleep(0)
            clock.advance(step)
            for _ in range(5):
                await asyncio.sleep(0)
        assert [t - calls[0] for t in calls] == [0.0, 6.0] and not beating.done()
        beating.cancel()
        await asyncio.gather(beating, return_exceptions=True)
    assert lost == []


async def test_a_watch_round_the_database_fails_is_logged_and_the_next_goes_on(
    tmp_path: Path, monkeypatch: Any
) -> None:
    job = load_job(write_job(tmp_path))
    runner = Runner(job, fast_settings("http://127.0.0.1:1", tmp_path / "state"))

    async def unreachable(*args: Any) -> Any:
        raise StateUnreachable("the state database could not do a step now")

    monkeypatch.setattr(runner, "_intake", unreachable)
    with capture_logs() as logs:
        taken = await runner._round(SimpleNamespace(), Drivers())  # type: ignore[arg-type]
    assert taken.waiting == [] and [e["event"] for e in logs] == ["round.failed"]
