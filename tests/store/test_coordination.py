"""Leases, roles and the account's window in a real PostgreSQL: claim, renew, expire, take
over; two workers claiming at once; the shared images-per-minute window; migrations."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator

import psycopg
import pytest

from pipeline.errors import StateUnreachable, StoreError
from pipeline.store.coordination import INTAKE, POLLER, AccountWindow, Coordination
from pipeline.store.ledger import Charge, Tally
from pipeline.store.postgres import MIGRATIONS, SCHEMA_VERSION, LeaseLost, PostgresStore
from pipeline.store.states import SUBMITTING, UPLOADED, VALIDATED
from pipeline.views.summary import EXIT_UNREACHABLE, exit_code_for_error
from tests.conftest import force_state

TTL = 60.0
ACTIVE = (VALIDATED, UPLOADED)


@pytest.fixture
def store(postgres_url: str) -> Iterator[PostgresStore]:
    with PostgresStore(postgres_url) as opened:
        yield opened


def _subjects(store: PostgresStore, count: int) -> list[int]:
    return [store.add_version("job", f"s{n:02}", "fp", "subject", state=VALIDATED, now=1.0).id
            for n in range(count)]


def _worker(store: PostgresStore, name: str, *, now: float = 100.0) -> Coordination:
    worker = Coordination(store, "job", name, ttl=TTL)
    worker.join(host="h", pid=1, now=now)
    return worker


def test_a_lone_worker_claims_everything_and_a_second_finds_nothing_free(
    store: PostgresStore,
) -> None:
    ids = _subjects(store, 4)
    first = _worker(store, "a")
    assert first.claim(ACTIVE, now=100.0) == ids
    second = _worker(store, "b")
    assert second.claim(ACTIVE, now=101.0) == []
    assert first.holder(ids[0], now=101.0) == "a"


def test_workers_alive_together_take_a_fair_share_each(store: PostgresStore) -> None:
    ids = _subjects(store, 10)
    workers = [_worker(store, name) for name in "abc"]
    claimed = [w.claim(ACTIVE, now=100.0) for w in workers]
    assert [len(c) for c in claimed] == [4, 4, 2]  # ceil(10 / 3) each while there are some
    assert sorted(i for c in claimed for i in c) == ids  # every subject once, none twice


def test_an_expired_lease_is_taken_over_and_its_old_owner_learns_it_lost_it(
    store: PostgresStore,
) -> None:
    [subject] = _subjects(store, 1)
    dead = _worker(store, "dead")
    assert dead.claim(ACTIVE, now=100.0) == [subject]
    heir = _worker(store, "heir", now=100.0 + TTL)
    assert heir.claim(ACTIVE, now=100.0 + TTL - 1) == []  # still live: nobody else's yet
    assert heir.claim(ACTIVE, now=100.0 + TTL + 1) == [subject]
    assert dead.renew(now=100.0 + TTL + 2) == set()  # its heartbeat finds it gone


def test_the_heartbeat_keeps_a_lease_past_its_first_expiry(store: PostgresStore) -> None:
    [subject] = _subjects(store, 1)
    alive = _worker(store, "alive")
    alive.claim(ACTIVE, now=100.0)
    assert alive.renew(now=100.0 + TTL / 3) == {subject}
    other = _worker(store, "other")
    assert other.claim(ACTIVE, now=100.0 + TTL + 1) == []  # renewed until 100 + 4/3 TTL
    alive.leave()
    assert other.claim(ACTIVE, now=100.0 + TTL + 2) == [subject]  # given back at once


def test_two_workers_claiming_at_the_same_moment_never_share_a_subject(
    postgres_url: str, store: PostgresStore
) -> None:
    ids = _subjects(store, 40)
    got: dict[str, list[int]] = {}
    start = threading.Barrier(4)

    def claim(name: str) -> None:
        with PostgresStore(postgres_url) as own:
            worker = Coordination(own, "job", name, ttl=TTL)
            start.wait()
            got[name] = []
            for _ in range(20):
                got[name] += worker.claim(ACTIVE, now=100.0)

    threads = [threading.Thread(target=claim, args=(n,)) for n in "abcd"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    taken = [i for name in got for i in set(got[name])]
    assert sorted(taken) == ids  # all of them, and each by one worker only


def test_a_role_has_one_holder_until_it_expires(store: PostgresStore) -> None:
    a, b = _worker(store, "a"), _worker(store, "b")
    assert a.take_role(POLLER, now=100.0)
    assert not b.take_role(POLLER, now=101.0)
    assert a.take_role(POLLER, now=102.0)  # kept by its holder
    assert b.take_role(INTAKE, now=102.0)  # another role is another lease
    assert b.take_role(POLLER, now=102.0 + TTL + 1)  # a stopped renewing: b takes over
    assert not a.take_role(POLLER, now=102.0 + TTL + 2)


def _training(subject_id: int) -> Charge:
    return Charge(job="job", subject_id=subject_id, subject="s00", version=1,
                  endpoint="training", kind="subject", units=1, pass_id="p")


def test_a_paid_intent_needs_the_workers_live_lease(postgres_url: str) -> None:
    with PostgresStore(postgres_url, owner="a") as mine:
        [subject] = _subjects(mine, 1)
        force_state(mine, subject, now=1.0, state=UPLOADED)
        with pytest.raises(LeaseLost, match="no longer holds"):  # never leased
            mine.transition(subject, expected=UPLOADED, to=SUBMITTING, now=100.0,
                            charge=_training(subject))
        Coordination(mine, "job", "a", ttl=TTL).claim((UPLOADED,), now=100.0)
        with pytest.raises(LeaseLost):  # expired
            mine.transition(subject, expected=UPLOADED, to=SUBMITTING, now=100.0 + TTL,
                            charge=_training(subject))
        assert mine.ledger("job") == [] and mine.subject(subject).state == UPLOADED
        mine.transition(subject, expected=UPLOADED, to=SUBMITTING, now=101.0,
                        charge=_training(subject))
        assert len(mine.ledger("job")) == 1


def test_the_account_window_is_shared_by_every_worker(postgres_url: str) -> None:
    with PostgresStore(postgres_url) as one, PostgresStore(postgres_url) as two:
        first, second = AccountWindow(one, "acct"), AccountWindow(two, "acct")
        assert first.take("txt2img", 6, limit=10, window=60.0, now=100.0) is None
        assert second.take("txt2img", 4, limit=10, window=60.0, now=110.0) is None
        # Full: the next image may start when the oldest leaves the window.
        assert second.take("txt2img", 1, limit=10, window=60.0, now=120.0) == pytest.approx(40.0)
        assert first.take("img2img", 5, limit=5, window=60.0, now=120.0) is None  # its own
        assert AccountWindow(one, "other").take("txt2img", 10, limit=10, window=60.0,
                                                now=120.0) is None
        assert first.take("txt2img", 6, limit=10, window=60.0, now=160.5) is None
        second.pause("txt2img", until=200.0)  # a 429 holds every worker back
        assert first.take("txt2img", 1, limit=100, window=60.0, now=190.0) == pytest.approx(10.0)


def test_an_older_schema_is_upgraded_and_a_reader_refuses_it(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("CREATE TABLE lora_pipeline_schema (version BIGINT)")
        db.execute("INSERT INTO lora_pipeline_schema VALUES (%s)", (SCHEMA_VERSION - 1,))
        for step in MIGRATIONS[:-1]:
            for statement in step.split(";"):
                if statement.strip():
                    db.execute(statement)
        db.execute("INSERT INTO subjects (job, name, version, fingerprint, kind, state,"
                   " created_at, updated_at) VALUES ('job', 'alice', 1, 'fp', 'subject',"
                   " 'done', 1, 1)")
    with pytest.raises(StoreError, match="run a pass"):
        PostgresStore(postgres_url, read_only=True)
    with PostgresStore(postgres_url) as upgraded:
        assert upgraded.schema_version == SCHEMA_VERSION
        assert upgraded.latest("job", "alice").state == "done"
        assert Coordination(upgraded, "job", "a", ttl=TTL).take_role(INTAKE, now=1.0)


def test_a_newer_schema_is_refused(postgres_url: str) -> None:
    with PostgresStore(postgres_url) as store:
        store._db.execute("UPDATE lora_pipeline_schema SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="upgrade lora-pipeline"):
        PostgresStore(postgres_url)


def test_an_unreachable_database_is_named_without_its_password(tmp_path: object) -> None:
    url = f"postgresql://lora:hunter2-secret@/nowhere?host={tmp_path}"
    with pytest.raises(StoreError) as refused:
        PostgresStore(url)
    assert "cannot be reached" in str(refused.value) and "LORA_STATE_URL" in str(refused.value)
    assert "hunter2" not in str(refused.value)


def _blocked_on_a_lock(store: PostgresStore) -> bool:
    """Whether another session of the database is waiting for a lock (polled, not slept:
    up to ten seconds for the other thread to get there)."""
    for _ in range(1000):
        waiting = store._db.execute(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'"
        ).fetchone()[0]
        if waiting:
            return True
        threading.Event().wait(0.01)
    return False


def _in_thread(work: Callable[[], object]) -> tuple[threading.Thread, list[str]]:
    outcome: list[str] = []

    def run() -> None:
        try:
            work()
            outcome.append("done")
        except Exception as exc:  # noqa: BLE001 - the loser's error is the point
            outcome.append(type(exc).__name__)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_two_hosts_racing_for_one_compare_and_set_move_it_once(postgres_url: str) -> None:
    with PostgresStore(postgres_url) as one, PostgresStore(postgres_url) as two:
        [subject] = _subjects(one, 1)
        with one.atomic():
            one.transition(subject, expected=VALIDATED, to="uploading", now=2.0)
            thread, outcome = _in_thread(lambda: two.transition(
                subject, expected=VALIDATED, to="uploading", now=2.0))
            assert _blocked_on_a_lock(one)  # the second writer waits for the row...
        thread.join()
        assert outcome == ["StateConflict"]  # ...then finds it moved


def test_two_hosts_racing_under_a_ceiling_cannot_both_slip_under_it(postgres_url: str) -> None:
    def one_training_at_most(job: Tally, this_pass: Tally, request: Tally) -> str | None:
        del this_pass
        return "over" if job.training_count + request.training_count > 1 else None

    with PostgresStore(postgres_url) as one, PostgresStore(postgres_url) as two:
        first, second = _subjects(one, 2)
        for subject in (first, second):
            force_state(one, subject, now=1.0, state=UPLOADED)
        charge = dataclasses.replace(_training(first), check=one_training_at_most)
        with one.atomic():
            one.transition(first, expected=UPLOADED, to=SUBMITTING, now=2.0, charge=charge)
            thread, outcome = _in_thread(lambda: two.transition(
                second, expected=UPLOADED, to=SUBMITTING, now=2.0,
                charge=dataclasses.replace(_training(second), check=one_training_at_most)))
            assert _blocked_on_a_lock(one)  # the ledger's lock: it waits to see this row
        thread.join()
        assert outcome == ["SpendCeilingReached"]
        assert len(one.ledger("job")) == 1 and one.subject(second).state == UPLOADED


def test_a_lost_connection_fails_one_step_and_the_next_connects_again(
    postgres_url: str, store: PostgresStore
) -> None:
    [subject] = _subjects(store, 1)
    with PostgresStore(postgres_url) as admin:
        pid = store._db.execute("SELECT pg_backend_pid()").fetchone()[0]
        admin._db.execute("SELECT pg_terminate_backend(?)", (pid,))
    with pytest.raises(StateUnreachable, match="was lost"):
        store.subject(subject)
    assert store.subject(subject).state == VALIDATED  # connected again
    # Lost inside a transaction: the whole of it fails; nothing goes on over a new connection.
    with pytest.raises(StateUnreachable), store.atomic() as db:
        db.execute("UPDATE subjects SET error = 'half' WHERE id = ?", (subject,))
        with PostgresStore(postgres_url) as admin:
            pid = db.execute("SELECT pg_backend_pid()").fetchone()[0]
            admin._db.execute("SELECT pg_terminate_backend(?)", (pid,))
        db.execute("UPDATE subjects SET warnings = 'half' WHERE id = ?", (subject,))
    assert (store.subject(subject).error, store.subject(subject).warnings) == (None, None)
    assert exit_code_for_error(StateUnreachable("x")) == EXIT_UNREACHABLE  # cron: try later


@pytest.mark.parametrize("url", [
    "postgresql://lora:Hunter%2Secret!@127.0.0.1:1/lora",  # a bare % libpq quotes back
    "postgresql://lora:Hunter2Secret@127.0.0.1:1/lora",  # nothing listens there
])
def test_no_message_about_the_database_shows_its_password(url: str) -> None:
    with pytest.raises(StoreError) as refused:
        PostgresStore(url)
    assert "Secret" not in str(refused.value) and "LORA_STATE_URL" in str(refused.value)
