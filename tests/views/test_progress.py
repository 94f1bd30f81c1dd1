"""The live progress view: what a recorded terminal shows, and silence without a terminal."""

from __future__ import annotations

import asyncio
import io
import re
import threading
from typing import Any

import pytest
from rich.console import Console

from pipeline.engine.live import LiveMeter, UploadProgress
from pipeline.store.sqlite import SqliteStore
from pipeline.store.states import DONE, FAILED, TRAINING, VALIDATED
from pipeline.views.progress import ProgressView, format_eta, format_upload, render
from pipeline.views.summary import SubjectSummary, Summaries, summarize
from tests.conftest import closed_after_test, force_state

ESCAPE = re.compile(r"\x1b|\x9b|\r")


def summary(name: str, state: str, **values: Any) -> SubjectSummary:
    base: dict[str, Any] = dict(
        name=name, version=1, state=state, images=12, rejected_files=[], warnings=[],
        training_name=None, task_id=None, task_status=None, progress=None, eta=None,
        model_name=None, lora_path=None, prompts_done=0, prompts_total=0, outputs=[],
        error=None,
    )
    return SubjectSummary(**{**base, **values})


MID_RUN = [
    summary("alice", "training", task_id="t-1", task_status="TRAINING", progress=62, eta=185),
    summary("bob", "training", task_id="t-2", task_status="QUEUING", progress=0, eta=1240),
    summary("carol", "submitting"),
    summary("dave", "uploading"),
    summary("teapot", "generating", prompts_done=1, prompts_total=3, outputs=["a", "b"]),
    summary("erin", "done", prompts_done=2, prompts_total=2, outputs=["a", "b", "c", "d"]),
    summary("frank", "done", version=2, prompts_done=2, prompts_total=2),
    summary("mixed", "rejected", error="51 images, at most 50"),
    summary("gina", "failed", error="training FAILED on the service: out of memory"),
]


def recorded(*subjects: SubjectSummary, title: str | None = "portraits") -> str:
    console = Console(record=True, width=120, force_terminal=True, file=io.StringIO())
    console.print(render(list(subjects), title=title))
    return console.export_text()


def test_counts_per_stage() -> None:
    text = recorded(*MID_RUN)
    assert "job portraits · 9 subjects" in text
    counts = dict(re.findall(r"(waiting|queued|uploading|training|generating|done|rejected|"
                             r"failed) (\d+)", text.splitlines()[1]))
    assert counts == {"waiting": "0", "queued": "0", "uploading": "1", "training": "3",
                      "generating": "1", "done": "2", "rejected": "1", "failed": "1"}


def test_waiting_counts_the_inbox_folders_not_taken_in_yet() -> None:
    """Folders still settling are no subjects yet: the count comes from the pass's meter,
    and a subject validated but not yet uploading is ``queued``, not waiting."""
    console = Console(record=True, width=120, force_terminal=True, file=io.StringIO())
    console.print(render([summary("alice", VALIDATED)], title="p", waiting=["bob", "carol"]))
    header = console.export_text().splitlines()[1]
    assert "waiting 2" in header and "queued 1" in header


def test_each_upload_shows_photos_bytes_and_rate() -> None:
    dave = UploadProgress(4, 10, 28_100_000, 71_000_000, started=100.0, updated=114.8)
    console = Console(record=True, width=160, force_terminal=True, file=io.StringIO())
    console.print(render(MID_RUN, title="p", uploads={("dave", 1): dave}))
    lines = console.export_text().splitlines()
    assert any(line.startswith("uploads") for line in lines)
    row = next(line for line in lines if line.startswith("dave"))
    assert "uploading 4/10 photos, 28.1/71.0 MB, 1.9 MB/s" in row and "━" in row


def test_format_upload_before_anything_is_sent() -> None:
    assert format_upload(UploadProgress(0, 3, 0, 2_500_000, started=5.0, updated=5.0)) == (
        "uploading 0/3 photos, 0.0/2.5 MB")


def test_each_training_in_flight_shows_status_progress_and_eta() -> None:
    lines = recorded(*MID_RUN).splitlines()
    assert any("trainings in flight" in line for line in lines)
    alice = next(line for line in lines if line.startswith("alice"))
    assert "TRAINING" in alice and "62%" in alice and "3m 05s" in alice
    assert "━" in alice  # the bar
    bob = next(line for line in lines if line.startswith("bob"))
    assert "QUEUING" in bob and "0%" in bob and "20m 40s" in bob
    carol = next(line for line in lines if line.startswith("carol"))
    assert "submitting" in carol and "waiting for the service" in carol


def test_generations_done_of_total_per_subject() -> None:
    lines = recorded(*MID_RUN).splitlines()
    assert any(line.startswith("generations") for line in lines)
    teapot = next(line for line in lines if line.startswith("teapot"))
    assert "generating" in teapot and "1/3" in teapot and teapot.rstrip().endswith("2")
    erin = next(line for line in lines if line.startswith("erin"))
    assert "2/2" in erin and erin.rstrip().endswith("4")
    assert any(line.startswith("frank (v2)") for line in lines)
    # In-flight subjects come before finished ones.
    order = [line.split()[0] for line in lines if line.split()[:1] in (["teapot"], ["erin"])]
    assert order == ["teapot", "erin"]


def test_failures_are_shown_with_their_reason() -> None:
    text = recorded(*MID_RUN)
    assert "gina: training FAILED on the service: out of memory" in text


def test_long_lists_are_cut_short() -> None:
    many = [summary(f"s{n:02d}", "training", progress=n, eta=60) for n in range(20)]
    text = recorded(*many)
    assert "s11" in text and "s12" not in text
    assert "... 8 more" in text


def test_an_empty_job() -> None:
    text = recorded(title="empty")
    assert "job empty · 0 subjects" in text
    assert "trainings" not in text and "generations" not in text


def test_format_eta() -> None:
    assert [format_eta(s) for s in (None, -1, 0, 45, 60, 185, 3600, 7620)] == [
        "", "", "0s", "45s", "1m 00s", "3m 05s", "1h 00m", "2h 07m"
    ]


# --- the live view ---------------------------------------------------------------------------


class Snapshots:
    """A snapshot function that counts its calls and says when it had enough."""

    def __init__(self, subjects: list[SubjectSummary], wanted: int = 3) -> None:
        self.subjects = subjects
        self.calls = 0
        self.wanted = wanted
        self.enough = asyncio.Event()

    def __call__(self) -> list[SubjectSummary]:
        self.calls += 1
        if self.calls >= self.wanted:
            self.enough.set()
        return self.subjects


async def test_on_a_terminal_the_view_refreshes_while_the_block_runs() -> None:
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=True)
    snapshots = Snapshots(MID_RUN)
    async with ProgressView(console, snapshots, title="portraits", interval=0.01) as view:
        assert view.active
        await asyncio.wait_for(snapshots.enough.wait(), 5)
    assert snapshots.calls >= 3
    shown = out.getvalue()
    assert "62%" in shown and "3m 05s" in shown and "1/3" in shown
    assert "\x1b[" in shown  # drawn with control codes on a terminal


async def test_the_view_reads_the_pass_meter_at_each_redraw() -> None:
    out = io.StringIO()
    console = Console(file=out, width=160, force_terminal=True)
    meter = LiveMeter()
    meter.set_waiting(["zoe"])
    progress = UploadProgress(1, 2, 1_000_000, 2_000_000, started=0.0, updated=1.0)
    meter.track_upload("dave", 1, progress)
    async with ProgressView(console, Snapshots(MID_RUN), interval=0.01, meter=meter,
                            transient=False) as view:
        progress.sent(1_000_000, 1_000_000, 2.0)
        await view.refresh()
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    assert "uploading 1/2 photos, 1.0/2.0 MB, 1.0 MB/s" in shown
    assert "uploading 2/2 photos, 2.0/2.0 MB, 1.0 MB/s" in shown
    assert "waiting 1" in shown


async def test_without_a_terminal_the_view_prints_nothing_at_all() -> None:
    out = io.StringIO()
    console = Console(file=out, width=120)
    assert not console.is_terminal
    snapshots = Snapshots(MID_RUN)
    async with ProgressView(console, snapshots, interval=0.01) as view:
        assert not view.active
        await view.refresh()
        await asyncio.sleep(0.05)  # several intervals would have passed
    assert snapshots.calls == 0
    assert out.getvalue() == ""
    assert not ESCAPE.search(out.getvalue())


async def test_a_dumb_terminal_gets_no_view() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, _environ={"TERM": "dumb"})
    snapshots = Snapshots(MID_RUN)
    async with ProgressView(console, snapshots, interval=0.01) as view:
        assert not view.active
    assert out.getvalue() == "" and snapshots.calls == 0


async def test_a_failing_snapshot_never_breaks_the_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=True)
    calls = 0
    ready = asyncio.Event()

    def snapshot() -> list[SubjectSummary]:
        nonlocal calls
        calls += 1
        if calls >= 4:
            ready.set()
        if calls > 1:
            raise RuntimeError("database is locked")
        return MID_RUN

    async with ProgressView(console, snapshot, interval=0.01):
        await asyncio.wait_for(ready.wait(), 5)
    shown = out.getvalue() + capsys.readouterr().out
    assert "62%" in shown  # the first frame stayed
    assert shown.count("progress.snapshot_failed") == 1  # logged once, not every refresh


async def test_the_view_stops_when_the_block_raises() -> None:
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=True)
    view = ProgressView(console, Snapshots(MID_RUN), interval=0.01)
    with pytest.raises(KeyError):
        async with view:
            raise KeyError("boom")
    assert view._task is None and view._live is None
    assert all(t.get_name() != "progress-view" for t in asyncio.all_tasks())


async def test_the_snapshot_is_taken_off_the_event_loop() -> None:
    """While a snapshot is being read the loop goes on: here the snapshot can only end once
    a task on the loop has ticked three times after it began."""
    began, release = threading.Event(), threading.Event()
    readers: list[int] = []
    released: list[bool] = []

    def snapshot() -> list[SubjectSummary]:
        readers.append(threading.get_ident())
        began.set()
        released.append(release.wait(timeout=5))  # a loop held up never lets it go
        return MID_RUN

    async def ticker() -> None:
        while not began.is_set():
            await asyncio.sleep(0)
        for _ in range(3):
            await asyncio.sleep(0)
        release.set()

    ticking = asyncio.create_task(ticker())
    console = Console(file=io.StringIO(), width=120, force_terminal=True)
    async with ProgressView(console, snapshot, interval=60):
        await ticking
    assert released and all(released)
    assert threading.get_ident() not in readers and len(set(readers)) == 1  # one thread


async def test_settled_subjects_are_not_read_again_until_their_row_changes(tmp_path) -> None:
    store = closed_after_test(SqliteStore(tmp_path / "state.db"))
    for n in range(30):
        row = store.add_version("job", f"s{n:02d}", "fp", "subject", state=VALIDATED, now=0)
        force_state(store, row.id, now=1, state=DONE)
    moving = store.add_version("job", "zz", "fp", "subject", state=VALIDATED, now=0)
    force_state(store, moving.id, now=1, state=TRAINING, progress=10)
    summaries = Summaries("job")
    assert summaries(store) == summarize(store, "job")
    reads: list[int] = []
    generations = store.generations
    store.generations = lambda subject_id: reads.append(subject_id) or generations(subject_id)

    force_state(store, moving.id, now=2, state=TRAINING, progress=50)
    force_state(store, 1, now=2, state=FAILED, error="out of memory")
    again = summaries(store)

    assert sorted(reads) == [1, moving.id]  # the one still moving, the one that changed
    assert again == summarize(store, "job")
    assert (again[0].state, again[-1].progress) == (FAILED, 50)
