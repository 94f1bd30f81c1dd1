"""The state keeps img2img's init images by content, and each generation's init image."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pipeline.store.protocol import InitImageUse
from pipeline.store.sqlite import MIGRATIONS, SCHEMA_VERSION, SqliteStore
from pipeline.store.states import VALIDATED
from tests.conftest import closed_after_test


def test_init_images_are_kept_once_by_content(tmp_path: Path) -> None:
    store = closed_after_test(SqliteStore(tmp_path / "state.db"))
    store.keep_init_images({"aa": b"first"}, now=1.0)
    store.keep_init_images({"aa": b"ignored", "bb": b"second"}, now=2.0)
    assert (store.init_image("aa"), store.init_image("bb"), store.init_image("cc")) == (
        b"first", b"second", None)


def test_a_generation_records_what_it_starts_from(tmp_path: Path) -> None:
    store = closed_after_test(SqliteStore(tmp_path / "state.db"))
    row = store.add_version("job", "alice", "fp", "subject", state=VALIDATED, now=1.0)
    use = InitImageUse("/jobs/refs/pose.jpg", "aa", 0.6)
    plain, painted = store.ensure_generations(
        row.id, [(1, "01-plain", "plain"), (2, "02-painted", "painted")], now=1.0,
        img2img={2: use})
    assert (plain.endpoint, plain.init) == ("txt2img", None)
    assert (painted.endpoint, painted.init) == ("img2img", use)
    assert store.integrity_problems() == [
        "1 img2img generation(s) whose init image is not kept"]
    store.keep_init_images({"aa": b"bytes"}, now=1.0)
    assert store.integrity_problems() == []


def test_a_state_of_the_previous_schema_is_brought_up_to_date(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = sqlite3.connect(path, isolation_level=None)
    for step in MIGRATIONS[:-1]:
        db.executescript(step)
    db.execute("INSERT INTO subjects (job, name, version, fingerprint, kind, state,"
               " created_at, updated_at) VALUES ('job', 'alice', 1, 'fp', 'subject', 'done', 1, 1)")
    db.execute("INSERT INTO generations (subject_id, prompt_index, slug, prompt, state,"
               " created_at, updated_at) VALUES (1, 1, '01-x', 'x', 'done', 1, 1)")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION - 1}")
    db.close()
    store = closed_after_test(SqliteStore(path))
    assert store.schema_version == SCHEMA_VERSION
    [generation] = store.generations(1)
    assert generation.endpoint == "txt2img" and generation.init is None
