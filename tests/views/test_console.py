"""The terminal views: what ``status`` says about each subject's photos."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from pipeline.store.protocol import NewImage
from pipeline.store.sqlite import SqliteStore
from pipeline.store.states import VALIDATED
from pipeline.views.console import print_status
from pipeline.views.summary import summarize
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
