"""The poller: O(1) requests per cycle, the SERVING gate, deadlines."""

from __future__ import annotations

import asyncio
from pathlib import Path

from PIL import Image

from pipeline.api import ApiClient, DatasetItem, ExpertSetting, TrainingRequest
from pipeline.clock import ManualClock
from pipeline.emulator import EmulatorConfig, serve_emulator
from pipeline.engine.stages.context import StageContext
from pipeline.engine.stages.monitor import PROGRESS_CALLS_PER_CYCLE, TrainingMonitor
from pipeline.jobfile.loading import load_job
from pipeline.store.sqlite import SqliteStore
from pipeline.store.states import FAILED, TRAINED, TRAINING
from tests.conftest import EMULATOR_KEY, closed_after_test, fast_settings, write_job

IN_FLIGHT = 30


async def _start_trainings(api: ApiClient, tmp_path: Path, count: int) -> list[str]:
    image = tmp_path / "face.png"
    Image.new("RGB", (64, 64), "tan").save(image)
    assets_id = await api.upload_training_image(image, "png")
    request = TrainingRequest(
        name="n", base_model="v1-5-pruned-emaonly",
        image_dataset_items=[DatasetItem(assets_id=assets_id)],
        expert_setting=ExpertSetting(instance_prompt="a photo of ohwx person",
                                     class_prompt="person"),
    )
    return [await api.create_training("subject", request.model_copy(update={"name": f"t{n}"}))
            for n in range(count)]


async def test_a_cycle_costs_o1_requests_and_gates_on_serving(tmp_path) -> None:
    emulated = ManualClock()
    config = EmulatorConfig(api_keys=[EMULATOR_KEY], queue_seconds=1, train_seconds=10,
                            deploy_seconds=5)
    async with serve_emulator(config, clock=emulated) as server:
        settings = fast_settings(server.base_url, tmp_path)
        async with ApiClient(settings) as api:
            task_ids = await _start_trainings(api, tmp_path, IN_FLIGHT)
            store = closed_after_test(SqliteStore(tmp_path / "s.db"))
            job = load_job(write_job(tmp_path))
            subjects = []
            for n, task_id in enumerate(task_ids):
                row = store.add_version("test", f"s{n}", "fp", "subject", state=TRAINING, now=0)
                subjects.append(store.update_subject(row.id, now=0, task_id=task_id,
                                                     submitted_at=emulated.now()))
            ctx = StageContext(job, settings, api, store, emulated)
            monitor = TrainingMonitor(ctx)
            waits = [asyncio.create_task(monitor.wait(s)) for s in subjects]
            await asyncio.sleep(0)
            counters = server.emulator.counters

            emulated.advance(5)  # all TRAINING
            before = dict(counters.requests)
            await monitor.poll_once()
            lists = counters.requests["GET /v3/training"] - before.get("GET /v3/training", 0)
            details = counters.requests["GET /v3/training/subject"] - before.get(
                "GET /v3/training/subject", 0)
            assert lists == 1 and details == PROGRESS_CALLS_PER_CYCLE
            progressed = [store.subject(s.id) for s in subjects if store.subject(s.id).progress]
            assert len(progressed) == PROGRESS_CALLS_PER_CYCLE

            emulated.advance(8)  # SUCCESS, still DEPLOYING: not usable yet
            await monitor.poll_once()
            assert not any(w.done() for w in waits)
            assert all(store.subject(s.id).task_status == "SUCCESS" for s in subjects)

            emulated.advance(5)  # SERVING
            await monitor.poll_once()
            settled = await asyncio.wait_for(asyncio.gather(*waits), 1)
            assert {s.state for s in settled} == {TRAINED}
            assert all(s.model_name and s.model_name.startswith("model_") for s in settled)


async def test_deadlines_fail_a_training_that_never_ends(tmp_path) -> None:
    emulated = ManualClock()
    config = EmulatorConfig(api_keys=[EMULATOR_KEY], queue_seconds=10_000)
    async with serve_emulator(config, clock=emulated) as server:
        settings = fast_settings(server.base_url, tmp_path, training_deadline=3600)
        async with ApiClient(settings) as api:
            [task_id] = await _start_trainings(api, tmp_path, 1)
            store = closed_after_test(SqliteStore(tmp_path / "s.db"))
            row = store.add_version("test", "slow", "fp", "subject", state=TRAINING, now=0)
            row = store.update_subject(row.id, now=0, task_id=task_id, submitted_at=emulated.now())
            monitor = TrainingMonitor(StageContext(load_job(write_job(tmp_path)), settings, api,
                                                   store, emulated))
            wait = asyncio.create_task(monitor.wait(row))
            await asyncio.sleep(0)
            await monitor.poll_once()
            assert not wait.done()
            emulated.advance(3601)
            await monitor.poll_once()
            settled = await asyncio.wait_for(wait, 1)
            assert settled.state == FAILED and "QUEUING" in settled.error


async def test_run_slows_down_while_nothing_changes(tmp_path) -> None:
    emulated = ManualClock()
    config = EmulatorConfig(api_keys=[EMULATOR_KEY], queue_seconds=10_000)
    async with serve_emulator(config, clock=emulated) as server:
        settings = fast_settings(server.base_url, tmp_path, poll_interval_min=5,
                                 poll_interval_max=20)
        async with ApiClient(settings) as api:
            [task_id] = await _start_trainings(api, tmp_path, 1)
            store = closed_after_test(SqliteStore(tmp_path / "s.db"))
            row = store.add_version("test", "slow", "fp", "subject", state=TRAINING, now=0)
            row = store.update_subject(row.id, now=0, task_id=task_id, submitted_at=emulated.now())
            sleeps: list[float] = []

            class Recording(ManualClock):
                async def sleep(self, seconds: float) -> None:
                    sleeps.append(round(seconds, 2))
                    if len(sleeps) >= 5:
                        raise asyncio.CancelledError
                    await asyncio.sleep(0)

            clock = Recording(emulated.now())
            monitor = TrainingMonitor(StageContext(load_job(write_job(tmp_path)), settings, api,
                                                   store, clock))
            wait = asyncio.create_task(monitor.wait(row))
            runner = asyncio.create_task(monitor.run())
            await asyncio.wait({runner}, timeout=5)
            wait.cancel()
            assert sleeps == [5, 7.5, 11.25, 16.88, 20]
