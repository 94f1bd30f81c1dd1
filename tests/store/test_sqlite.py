import sqlite3
from pathlib import Path

import pytest

from pipeline.errors import StateConflict
from pipeline.store.protocol import NewImage
from pipeline.store.sqlite import SCHEMA_VERSION, SqliteStore
from pipeline.store.states import DONE, GEN_PENDING, GEN_SUBMITTED, TRAINING, UPLOADED, VALIDATED
from tests.conftest import force_generation_state, force_state

IMAGES = [
    NewImage("a.png", Path("/in/alice/a.png"), "aa", "png", None),
    NewImage("b.jpg", Path("/in/alice/b\udce9.jpg"), "bb", "jpeg", "a cap"),
]


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "state.db")


def test_new_file_is_at_the_current_schema_in_wal_mode(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    assert store.schema_version == SCHEMA_VERSION
    mode = sqlite3.connect(tmp_path / "s.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_reopening_keeps_data_and_does_not_remigrate(tmp_path: Path) -> None:
    first = SqliteStore(tmp_path / "s.db")
    first.add_version("job", "alice", "fp1", "subject", state=VALIDATED, now=1.0, images=IMAGES)
    first.close()
    again = SqliteStore(tmp_path / "s.db")
    assert again.latest("job", "alice") is not None
    images = again.images(again.latest("job", "alice").id)
    assert [i.name for i in images] == ["a.png", "b.jpg"]
    assert [i.path for i in images] == [i.path for i in IMAGES]  # odd bytes survive


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "s.db")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StateConflict, match="upgrade"):
        SqliteStore(tmp_path / "s.db")


def test_versions_supersede_each_other(store: SqliteStore) -> None:
    v1 = store.add_version("job", "alice", "fp1", "subject", state=VALIDATED, now=1.0)
    v2 = store.add_version("job", "alice", "fp2", "subject", state=VALIDATED, now=2.0)
    assert (v1.version, v2.version) == (1, 2)
    assert store.subject(v1.id).superseded == 1
    assert [s.id for s in store.subjects("job")] == [v2.id]
    assert store.latest("job", "alice").fingerprint == "fp2"


def test_rejections_and_warnings_are_kept(store: SqliteStore) -> None:
    row = store.add_version(
        "job", "bob", "fp", "subject", state="rejected", now=1.0,
        rejections=[("x.gif", "x.gif is a GIF image")], warnings=["only 3 images"],
        error="no usable image",
    )
    assert [(r.name, r.reason) for r in store.rejections(row.id)] == [("x.gif", "x.gif is a GIF image")]
    assert row.warning_list == ["only 3 images"] and row.error == "no usable image"


def test_update_subject_filters_by_state_and_rejects_unknown_fields(store: SqliteStore) -> None:
    row = store.add_version("job", "alice", "fp", "subject", state=VALIDATED, now=1.0)
    force_state(store, row.id, now=5.0, state=TRAINING, task_id="t1", submitted_at=4.0)
    assert [s.name for s in store.subjects("job", states=[TRAINING])] == ["alice"]
    assert store.subjects("job", states=[UPLOADED]) == []
    assert store.subject(row.id).updated_at == 5.0
    with pytest.raises(StateConflict, match="cannot be set here: \\['colour'\\]"):
        store.update_subject(row.id, now=6.0, colour="red")
    with pytest.raises(StateConflict, match="from training to flying"):
        store.transition(row.id, expected=TRAINING, to="flying", now=6.0)


def test_atomic_rolls_back_everything_on_error(store: SqliteStore) -> None:
    row = store.add_version("job", "alice", "fp", "subject", state=VALIDATED, now=1.0)
    with pytest.raises(RuntimeError):
        with store.atomic() as db:
            db.execute("UPDATE subjects SET state = ? WHERE id = ?", (DONE, row.id))
            raise RuntimeError("crash in the middle")
    assert store.subject(row.id).state == VALIDATED


def test_asset_cache_by_content_hash(store: SqliteStore) -> None:
    row = store.add_version("job", "alice", "fp", "subject", state=VALIDATED, now=1.0, images=IMAGES)
    assert store.cached_asset("aa") is None
    store.remember_asset("aa", "asset-1", now=2.0)
    store.set_image_asset(row.id, "aa", "asset-1")
    assert store.cached_asset("aa") == "asset-1"
    assert {i.sha256: i.assets_id for i in store.images(row.id)} == {"aa": "asset-1", "bb": None}


def test_generations_are_created_once_and_outputs_recorded(store: SqliteStore) -> None:
    row = store.add_version("job", "alice", "fp", "subject", state=VALIDATED, now=1.0)
    prompts = [(0, "00-portrait", "a portrait"), (1, "01-astronaut", "an astronaut")]
    first = store.ensure_generations(row.id, prompts, now=1.0)
    again = store.ensure_generations(row.id, prompts, now=2.0)
    assert [g.id for g in first] == [g.id for g in again]
    assert all(g.state == GEN_PENDING for g in again)
    force_generation_state(store, first[0].id, now=3.0, state=GEN_SUBMITTED, task_id="g1")
    store.record_output(first[0].id, 0, "out/alice/00-portrait/0.png")
    store.record_output(first[0].id, 0, "out/alice/00-portrait/0.png")
    assert [o.path for o in store.outputs(row.id)] == ["out/alice/00-portrait/0.png"]
    assert store.generations(row.id)[0].task_id == "g1"
    with pytest.raises(StateConflict):
        store.update_generation(first[0].id, now=3.0, colour="red")


def test_integrity_problems_spot_impossible_rows(store: SqliteStore) -> None:
    row = store.add_version("job", "alice", "fp", "subject", state=VALIDATED, now=1.0)
    assert store.integrity_problems() == []
    force_state(store, row.id, now=2.0, state=TRAINING)
    assert store.integrity_problems() == ["1 subject(s) past submission without a task id"]
