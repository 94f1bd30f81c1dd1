"""One poller for all the workers of a job: the API sees one worker's requests, every
worker's drivers learn the outcome from the store, and a dead poller is replaced."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pipeline.api import ApiClient
from pipeline.clock import ManualClock
from pipeline.emulator import EmulatorConfig, serve_emulator
from pipeline.engine.shared_monitor import SharedMonitor
from pipeline.engine.stages.context import StageContext
from pipeline.engine.work_share import SharedWorker
from pipeline.jobfile.loading import load_job
from pipeline.store.coordination import POLLER
from pipeline.store.postgres import PostgresStore
from pipeline.store.states import TRAINED, TRAINING
from tests.conftest import EMULATOR_KEY, closed_after_test, fast_settings, write_job
from tests.engine.stages.test_monitor import _start_trainings

TTL = 3.0
LIST = "GET /v3/training"


async def _tick(clock: ManualClock, seconds: int) -> None:
    """Let the clock run ``seconds`` one second at a time, the tasks working in between."""
    for _ in range(seconds):
        clock.advance(1)
        for _ in range(20):
            await asyncio.sleep(0)


async def test_one_worker_polls_for_all_and_another_takes_over_when_it_dies(
    tmp_path: Path, postgres_url: str
) -> None:
    clock = ManualClock()
    config = EmulatorConfig(api_keys=[EMULATOR_KEY], queue_seconds=1, train_seconds=4,
                            deploy_seconds=1)
    async with serve_emulator(config, clock=clock) as server:
        settings = fast_settings(server.base_url, tmp_path, poll_interval_min=1.0,
                                 poll_interval_max=1.0)
        job = load_job(write_job(tmp_path))
        async with ApiClient(settings) as api:
            stores = [closed_after_test(PostgresStore(postgres_url, owner=f"w{n}"))
                      for n in range(3)]
            workers = [SharedWorker(store, "test", clock, ttl=TTL) for store in stores]
            monitors = [SharedMonitor(StageContext(job, settings, api, store, clock), worker)
                        for store, worker in zip(stores, workers, strict=True)]

            async def training(count: int, first: int) -> list[int]:
                ids = []
                for n, task_id in enumerate(await _start_trainings(api, tmp_path, count)):
                    row = stores[0].add_version("test", f"s{first + n}", "fp", "subject",
                                                state=TRAINING, now=0)
                    ids.append(stores[0].update_subject(
                        row.id, now=0, task_id=task_id, submitted_at=clock.now()).id)
                return ids

            runs = [asyncio.create_task(m.run()) for m in monitors]
            heartbeats = [asyncio.create_task(w.heartbeat(lambda lost: None)) for w in workers]
            first = await training(6, 0)
            # Drivers on the two other workers wait for their subjects through the store.
            waits = [asyncio.create_task(monitors[1 + n % 2].wait(stores[0].subject(i)))
                     for n, i in enumerate(first)]
            before = server.emulator.counters.requests[LIST]
            await _tick(clock, 10)
            assert {w.result().state for w in waits if w.done()} == {TRAINED}
            assert all(w.done() for w in waits)
            lists = server.emulator.counters.requests[LIST] - before
            assert 1 <= lists <= 6  # one poller's cycles (4 here), not three's (12)
            [poller] = [n for n, w in enumerate(workers) if w.has_role(POLLER)]

            # The poller dies (no goodbye: its role must expire); another takes over.
            runs[poller].cancel()
            heartbeats[poller].cancel()
            await asyncio.gather(runs[poller], heartbeats[poller], return_exceptions=True)
            second = await training(3, 6)
            await _tick(clock, 4 * int(TTL) + 8)
            assert {stores[0].subject(i).state for i in second} == {TRAINED}
            [heir] = [n for n, w in enumerate(workers) if w.has_role(POLLER) and n != poller]
            assert heir != poller
            for task in runs + heartbeats:
                task.cancel()
            await asyncio.gather(*runs, *heartbeats, return_exceptions=True)
