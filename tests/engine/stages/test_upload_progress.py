"""Upload progress: photos and bytes sent per subject, kept in the pass's live meter (no
store write per chunk), and an ``upload.progress`` log line at most every
``PROGRESS_LOG_SECONDS`` so a run without a terminal shows it too. The service is a
stand-in whose every upload takes ``SECONDS_PER_PHOTO`` on the test's clock."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import structlog

from pipeline.engine.live import LiveMeter, UploadProgress, current_meter, metering
from pipeline.engine.stages.context import StageContext
from pipeline.engine.stages.intake import intake
from pipeline.engine.stages.upload import PROGRESS_LOG_SECONDS, upload_subject
from pipeline.jobfile.loading import load_job
from pipeline.store.sqlite import SqliteStore
from pipeline.store.states import UPLOADED
from tests.conftest import RecordingClock, closed_after_test, fast_settings, write_job
from tests.engine.folders import write_photos

SECONDS_PER_PHOTO = 4.0


class Service:
    """Uploads that take time, and a look at the meter as each one begins."""

    def __init__(self, clock: RecordingClock, meter: LiveMeter) -> None:
        self.clock, self.meter = clock, meter
        self.seen: list[UploadProgress] = []

    async def upload_training_image(self, source: Any, extension: str) -> str:
        self.seen.extend(self.meter.uploads().values())
        self.clock._now += SECONDS_PER_PHOTO
        return f"asset-{len(self.seen)}"


async def _upload(tmp_path: Path, photos: int) -> tuple[Any, ...]:
    job = load_job(write_job(tmp_path))
    folder = tmp_path / "inbox" / "alice"
    write_photos(folder, photos)
    sizes = sorted(p.stat().st_size for p in folder.iterdir())
    store = closed_after_test(SqliteStore(tmp_path / "state.db"))
    clock = RecordingClock()
    [row] = intake(job, store, clock).new_versions
    meter = LiveMeter()
    service = Service(clock, meter)
    settings = fast_settings("http://127.0.0.1:9", tmp_path / "state")
    with metering(meter):
        ctx = StageContext(job, settings, service, store, clock)  # type: ignore[arg-type]
    assert ctx.meter is meter
    with structlog.testing.capture_logs() as events:
        done = await upload_subject(ctx, row, asyncio.Semaphore(1))
    return done, service, events, sizes, meter


async def test_the_meter_counts_photos_and_bytes_as_each_photo_is_sent(tmp_path: Path) -> None:
    done, service, _, sizes, meter = await _upload(tmp_path, 3)
    assert done.state == UPLOADED
    total = sum(sizes)
    assert [(p.photos_done, p.photos_total, p.bytes_total) for p in service.seen] == [
        (0, 3, total), (1, 3, total), (2, 3, total)]
    assert service.seen[0].bytes_done == 0 and service.seen[0].rate is None
    second = service.seen[2]
    assert second.bytes_done > 0
    assert second.rate == second.bytes_done / (2 * SECONDS_PER_PHOTO)
    assert meter.uploads() == {}  # finished: no longer shown


async def test_a_slow_upload_logs_progress_at_most_every_few_seconds(tmp_path: Path) -> None:
    photos = 6
    _, _, events, sizes, _ = await _upload(tmp_path, photos)
    progress = [e for e in events if e["event"] == "upload.progress"]
    # A line once PROGRESS_LOG_SECONDS have passed since the last, never for the last photo.
    every = int(-(-PROGRESS_LOG_SECONDS // SECONDS_PER_PHOTO))
    expected = [n for n in range(1, photos) if n % every == 0]
    assert [e["photos_done"] for e in progress] == expected
    first = progress[0]
    assert first["subject"] == "alice" and first["photos_total"] == photos
    assert first["bytes_total"] == sum(sizes) and 0 < first["bytes_done"] < sum(sizes)
    assert first["rate"] == round(first["bytes_done"] / (every * SECONDS_PER_PHOTO))
    [finished] = [e for e in events if e["event"] == "upload.done"]
    assert finished["bytes"] == sum(sizes)
    assert finished["duration"] == photos * SECONDS_PER_PHOTO


def test_without_a_meter_set_the_stages_have_none() -> None:
    assert current_meter() is None
