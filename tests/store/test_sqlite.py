import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.errors import StateConflict, StoreError
from pipeline.store.protocol import NewImage
from pipeline.store.sqlite import MIGRATIONS, SCHEMA_VERSION, SqliteStore
from pipeline.store.states import DONE, GEN_PENDING, GEN_SUBMITTED, TRAINING, UPLOADED, VALIDATED
from tests.conftest import force_generation_state, force_state, reopened

IMAGES = [
    NewImage("a.png", Path("/in/alice/a.png"), "aa", "png", None),
    NewImage("b.jpg", Path("/in/alice/b\udce9.jpg"), "bb", "jpeg", "a cap"),
]


@pytest.fixture
def store(any_store: SqliteStore) -> SqliteStore:
    """Each test that takes ``store`` runs on SQLite and on PostgreSQL."""
    return any_store


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteStore]:
    """For what only SQLite has: its file, its write lock."""
    with SqliteStore(tmp_path / "state.db") as opened:
        yield opened


def test_new_file_is_at_the_current_schema_in_wal_mode(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "s.db") as store:
        assert store.schema_version == SCHEMA_VERSION
    db = sqlite3.connect(tmp_path / "s.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_reopening_keeps_data_and_does_not_remigrate(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "s.db") as first:
        first.add_version("job", "alice", "fp1", "subject", state=VALIDATED, now=1.0,
                          images=IMAGES)
    with SqliteStore(tmp_path / "s.db") as again:
        assert again.latest("job", "alice") is not None
        images = again.images(again.latest("job", "alice").id)
    assert [i.name for i in images] == ["a.png", "b.jpg"]
    assert [i.path for i in images] == [i.path for i in IMAGES]  # odd bytes survive


@pytest.mark.parametrize("read_only", [False, True])
def test_a_newer_schema_is_refused(tmp_path: Path, read_only: bool) -> None:
    db = sqlite3.connect(tmp_path / "s.db")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match="upgrade lora-pipeline"):
        SqliteStore(tmp_path / "s.db", read_only=read_only)


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


# --- opening: read-only, migrations only when needed, damaged files ---------------------------


def _schema_v1(path: Path) -> None:
    """A file as the first release left it, with one subject."""
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(MIGRATIONS[0])
    db.execute("INSERT INTO subjects (job, name, version, fingerprint, kind, state,"
               " created_at, updated_at) VALUES ('job', 'alice', 1, 'fp', 'subject', 'done', 1, 1)")
    db.execute("PRAGMA user_version = 1")
    db.close()


def _user_version(path: Path) -> int:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


@pytest.fixture
def writer_holding_the_lock(
    sqlite_store: SqliteStore, tmp_path: Path
) -> Iterator[sqlite3.Connection]:
    """Another connection in the middle of a write transaction, as a running pass is."""
    sqlite_store.add_version("job", "alice", "fp", "subject", state=VALIDATED, now=1.0)
    other = sqlite3.connect(tmp_path / "state.db", isolation_level=None, timeout=0)
    other.execute("BEGIN IMMEDIATE")
    other.execute("UPDATE subjects SET state = 'uploading'")
    yield other
    other.execute("ROLLBACK")
    other.close()


def test_read_only_opens_and_reads_while_a_pass_holds_the_write_lock(
    tmp_path: Path, writer_holding_the_lock: sqlite3.Connection
) -> None:
    with SqliteStore(tmp_path / "state.db", read_only=True) as reader:
        assert reader.read_only
        assert reader.latest("job", "alice").state == VALIDATED  # the last committed state


def test_opening_an_up_to_date_file_takes_no_write_lock(
    tmp_path: Path, writer_holding_the_lock: sqlite3.Connection
) -> None:
    """Migrations take the write lock only when there is something to migrate."""
    with SqliteStore(tmp_path / "state.db") as again:
        assert again.latest("job", "alice") is not None


def test_read_only_never_creates_a_file(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot be opened"):
        SqliteStore(tmp_path / "state.db", read_only=True)
    assert list(tmp_path.iterdir()) == []


def test_read_only_refuses_to_write(store: SqliteStore) -> None:
    with reopened(store, read_only=True) as reader:
        with pytest.raises(StoreError, match="read-only"):
            reader.add_version("job", "bob", "fp", "subject", state=VALIDATED, now=1.0)
    assert store.latest("job", "bob") is None


def test_an_older_schema_is_upgraded_by_a_pass_and_refused_by_a_reader(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    _schema_v1(path)
    with pytest.raises(StoreError, match="run a pass") as refused:
        SqliteStore(path, read_only=True)
    assert str(path) in str(refused.value)
    assert _user_version(path) == 1  # the reader changed nothing
    with SqliteStore(path) as upgraded:
        assert upgraded.schema_version == SCHEMA_VERSION
        assert upgraded.latest("job", "alice").state == "done"
    with SqliteStore(path, read_only=True) as reader:
        assert reader.latest("job", "alice").frozen is None


@pytest.mark.parametrize("read_only", [False, True])
def test_a_file_that_is_not_a_database_is_refused_with_what_to_do(
    tmp_path: Path, read_only: bool
) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"these are not the rows you are looking for\n" * 200)
    with pytest.raises(StoreError) as refused:
        SqliteStore(path, read_only=read_only)
    message = str(refused.value)
    assert str(path) in message and "not a sound state database" in message
    assert "Restore it from a backup" in message


def test_a_damaged_page_fails_the_check_on_open(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with SqliteStore(path) as store:
        for n in range(200):
            store.add_version("job", f"subject-{n}", "fp" * 30, "subject", state=VALIDATED,
                              now=1.0, error="x" * 200)
    data = bytearray(path.read_bytes())
    page = 4096
    data[3 * page : 3 * page + 512] = b"\xab" * 512  # a table page, not the header
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="not a sound state database") as refused:
        SqliteStore(path, read_only=True)
    assert str(path) in str(refused.value)


# --- atomic(): re-entrant, and rolled back when COMMIT fails -----------------------------------


def test_a_nested_atomic_is_part_of_the_outer_transaction(store: SqliteStore) -> None:
    row = store.add_version("job", "alice", "fp", "subject", state=VALIDATED, now=1.0)
    with pytest.raises(RuntimeError):
        with store.atomic() as db:
            db.execute("UPDATE subjects SET error = 'outer' WHERE id = ?", (row.id,))
            store.remember_asset("aa", "asset-1", now=2.0)  # atomic() inside atomic()
            raise RuntimeError("crash after both writes")
    assert store.subject(row.id).error is None
    assert store.cached_asset("aa") is None
    with store.atomic():
        store.remember_asset("aa", "asset-1", now=2.0)
        with store.atomic() as db:
            db.execute("UPDATE subjects SET error = 'inner' WHERE id = ?", (row.id,))
    assert store.cached_asset("aa") == "asset-1" and store.subject(row.id).error == "inner"


def test_an_error_in_a_nested_atomic_undoes_only_its_own_part(store: SqliteStore) -> None:
    with store.atomic():
        store.remember_asset("aa", "asset-1", now=2.0)
        with pytest.raises(RuntimeError):
            with store.atomic():
                store.remember_asset("bb", "asset-2", now=2.0)
                raise RuntimeError("the inner part fails")
    assert (store.cached_asset("aa"), store.cached_asset("bb")) == ("asset-1", None)


def test_a_failed_commit_is_rolled_back_and_the_store_stays_usable(
    sqlite_store: SqliteStore, tmp_path: Path
) -> None:
    store = sqlite_store
    """A deferred foreign key makes COMMIT itself fail, as a full disk would."""
    with pytest.raises(sqlite3.IntegrityError):
        with store.atomic() as db:
            db.execute("PRAGMA defer_foreign_keys = ON")
            db.execute("INSERT INTO rejections (subject_id, name, reason) VALUES (999, 'x', 'y')")
            store.remember_asset("aa", "asset-1", now=2.0)
    assert not store._db.in_transaction
    assert store.cached_asset("aa") is None
    other = sqlite3.connect(tmp_path / "state.db", isolation_level=None, timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")  # the write lock was let go
        other.execute("ROLLBACK")
    finally:
        other.close()
    store.remember_asset("aa", "asset-1", now=3.0)
    assert store.cached_asset("aa") == "asset-1"
