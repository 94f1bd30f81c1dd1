"""The terminal views: what ``status`` says about each subject's photos."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from rich.console import Console

from pipeline.cli.status import status_data
from pipeline.store.protocol import NewImage
from pipeline.store.sqlite import SqliteStore
from pipeline.store.states import REJECTED, VALIDATED
from pipeline.views.console import print_pass, print_status
from pipeline.views.summary import SubjectSummary, summarize
from tests.conftest import closed_after_test


def test_status_names_each_photo_sent_converted_and_each_refused(tmp_path: Path) -> None:
    store = closed_after_test(SqliteStore(tmp_path / "state.db"))
    stripped = ("metadata removed",)
    images = [
        NewImage("a.jpg", tmp_path / "a.jpg", "1" * 64, "jpeg", None, 1, 400.0, stripped),
        NewImage("b.jpg", tmp_path / "b.jpg", "2" * 64, "jpeg", None, 1, 300.0, stripped),
        NewImage("c.heic", tmp_path / "c.heic", "3" * 64, "jpeg", None, 1, 200.0,
                 ("HEIC to jpeg", "metadata removed")),
        NewImage("d.png", tmp_path / "d.png", "4" * 64, "png", None, 1, 500.0),
    ]
    store.add_version("job", "alice", "f" * 64, "subject", state=VALIDATED, now=1.0,
                      images=images, rejections=[("cat.jpg", "cat.jpg: no face found", b"\xff")])
    out = io.StringIO()

    print_status(Console(file=out, width=200), "job", summarize(store, "job"))

    text = out.getvalue()
    assert "  sent converted: metadata removed: a.jpg, b.jpg\n" in text
    assert "  sent converted: HEIC to jpeg; metadata removed: c.heic\n" in text
    assert "d.png" not in text  # sent exactly as it is on disk
    assert "  refused: cat.jpg: no face found\n" in text
    (summary,) = summarize(store, "job")
    assert summary.good_face_photos == 4
    assert "thumbnails" not in summary.to_json()


# --- settled subjects, refused folders, the retry command, one summary per pass -------------


def _summary(name: str, state: str, **values: Any) -> SubjectSummary:
    base: dict[str, Any] = dict(
        name=name, version=1, state=state, images=12, rejected_files=[], warnings=[],
        training_name=None, task_id="t-1", task_status=None, progress=None, eta=None,
        model_name=None, lora_path=None, prompts_done=0, prompts_total=0, outputs=[],
        error=None, updated_at=10.0, timings={"discovered": 10.0},
    )
    return SubjectSummary(**{**base, **values})


def _printed(*subjects: SubjectSummary, terminal: bool = False, **options: Any) -> str:
    out = io.StringIO()
    console = Console(file=out, width=300, force_terminal=terminal, color_system=None)
    if "since" in options:
        print_pass(console, "job", list(subjects), **options)
    else:
        print_status(console, "job", list(subjects), **options)
    return out.getvalue()


def test_a_settled_subject_shows_no_progress_or_eta() -> None:
    failed = _summary("gina", "failed", task_status="FAILED", progress=74, eta=2,
                      error="training FAILED on the service")
    training = _summary("alice", "training", task_status="TRAINING", progress=40, eta=90)
    for terminal in (False, True):
        text = _printed(failed, training, terminal=terminal)
        assert "74%" not in text and "eta 2s" not in text
        assert "40%" in text and "eta 90s" in text
    data = {s["name"]: s for s in status_data("job", [failed, training])["subjects"]}
    # Where the training ended stays (a fact), the ETA of something over does not.
    assert (data["gina"]["progress"], data["gina"]["eta"]) == (74, None)
    assert (data["alice"]["progress"], data["alice"]["eta"]) == (40, 90)


def test_a_folder_refused_as_a_whole_shows_how_many_photos_it_had(tmp_path: Path) -> None:
    store = closed_after_test(SqliteStore(tmp_path / "state.db"))
    reason = "not used: crowd/ was refused as a whole (see its error)"
    store.add_version("job", "crowd", "r" * 64, "subject", state=REJECTED, now=1.0,
                      rejections=[(f"p{n:02d}.jpg", reason) for n in range(51)],
                      error="51 images, at most 50 per training")
    [crowd] = summarize(store, "job")
    line_text = _printed(crowd)
    assert "job/crowd: rejected photos=51 refused" in line_text
    assert "images=0" not in line_text
    assert f"  refused: p00.jpg, p01.jpg, p02.jpg, p03.jpg, p04.jpg and 46 more: {reason}\n" \
        in line_text
    assert "51 photos, refused" in _printed(crowd, terminal=True)
    assert status_data("job", [crowd])["subjects"][0]["photos"] == 51


def test_a_failed_subjects_error_names_the_retry_command() -> None:
    failed = _summary("mary ann", "failed", error="training FAILED on the service")
    done = _summary("bob", "done", error="1 prompt failed")
    rejected = _summary("crowd", "rejected", error="51 images")
    job_file = Path("/srv/jobs/portraits.toml")
    text = _printed(failed, done, rejected, retry=(job_file, None))
    assert ("  error: training FAILED on the service; to try again: "
            "lora-pipeline retry /srv/jobs/portraits.toml 'mary ann'\n") in text
    assert "lora-pipeline retry /srv/jobs/portraits.toml bob" in text
    assert "retry /srv/jobs/portraits.toml crowd" not in text  # nothing to retry
    with_config = _printed(failed, retry=(job_file, Path("/srv/config.env")))
    assert "lora-pipeline --config /srv/config.env retry /srv/jobs/portraits.toml" in with_config


def test_a_pass_prints_what_it_changed_and_one_line_of_totals() -> None:
    old = _summary("alice", "done", warnings=["only 8 usable images"], updated_at=5.0,
                   timings={"discovered": 1.0},
                   rejected_files=[{"file": "x.gif", "reason": "x.gif is a GIF"}])
    new = _summary("bob", "training", warnings=["soft"], updated_at=20.0,
                   timings={"discovered": 1.0})
    quiet = _printed(old, new, since=30.0, warnings_before={})
    assert quiet == "job job: 2 subjects: 1 training, 1 done; nothing changed this pass\n"
    text = _printed(old, new, since=15.0, warnings_before={("bob", 1): frozenset({"soft"})})
    assert text.splitlines() == [
        "job/bob: training images=12 task=t-1",
        "job job: 2 subjects: 1 training, 1 done; 1 changed this pass",
    ]
    fresh = _printed(old, new, since=15.0, warnings_before={})
    assert "  warning: soft" in fresh and "only 8" not in fresh and "x.gif" not in fresh
