"""How the workers of a job share it through PostgreSQL: leases, roles, the account's window.

- **Leases on subjects.** A worker drives only the subjects it holds a lease on. It claims
  them with ``SELECT ... FOR UPDATE SKIP LOCKED`` (two workers claiming at once never take
  the same one, and neither waits for the other) and takes a fair share: the job's active
  subjects divided by the workers alive. Its heartbeat renews its leases; a worker that
  dies stops renewing, and once its leases expire the others claim its subjects and go on
  from their recorded state, exactly as after a crash.
- **Roles.** Jobs done by one worker at a time (intake, the training poller) are leases on
  a name, taken and renewed the same way.
- **The account's window.** The images-per-minute limits are counted in one table under an
  advisory lock, so every worker of every job on the account shares them.

Times are the workers' clocks (an injected one in tests); hosts are expected to keep their
clocks in step (NTP) to well under the lease, whose default is a minute.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .postgres import PostgresStore

#: Roles of :meth:`Coordination.take_role`.
INTAKE = "intake"
POLLER = "poller"


class Coordination:
    """One worker's side of the job's leases and roles."""

    def __init__(self, store: PostgresStore, job: str, owner: str, *, ttl: float) -> None:
        self.store = store
        self.job = job
        self.owner = owner
        self.ttl = ttl

    def join(self, *, host: str, pid: int, now: float) -> None:
        """Say this worker is alive (it then counts in everyone's fair share)."""
        with self.store.atomic() as db:
            db.execute("DELETE FROM workers WHERE job = ? AND seen_at < ?",
                       (self.job, now - 10 * self.ttl))
            db.execute(
                "INSERT INTO workers (owner, job, host, pid, started_at, seen_at)"
                " VALUES (?,?,?,?,?,?)"
                " ON CONFLICT (owner) DO UPDATE SET seen_at = excluded.seen_at",
                (self.owner, self.job, host, pid, now, now),
            )

    def leave(self) -> None:
        """Give back every lease and role at once (a clean stop): the others need not wait
        for them to expire."""
        with self.store.atomic() as db:
            for table in ("leases", "roles", "workers"):
                db.execute(f"DELETE FROM {table} WHERE owner = ?", (self.owner,))

    def live_workers(self, now: float) -> int:
        row = self.store._db.execute(
            "SELECT COUNT(*) FROM workers WHERE job = ? AND seen_at > ?",
            (self.job, now - self.ttl),
        ).fetchone()
        return max(1, int(row[0]))

    def claim(
        self, states: Iterable[str], *, now: float, only: Sequence[int] | None = None
    ) -> list[int]:
        """Lease this worker's share of the job's subjects in ``states`` that no live lease
        holds (of ``only`` when given); return every subject id it now holds among them."""
        wanted = list(states)
        marks = ",".join("?" * len(wanted))
        held_query = (f"SELECT l.subject_id FROM leases l JOIN subjects s ON s.id = l.subject_id"
                      f" WHERE l.owner = ? AND l.expires_at > ? AND s.state IN ({marks})")
        held_args = (self.owner, now, *wanted)
        with self.store.atomic() as db:
            active = int(db.execute(
                f"SELECT COUNT(*) FROM subjects WHERE job = ? AND superseded = 0"
                f" AND state IN ({marks})", (self.job, *wanted),
            ).fetchone()[0])
            mine = len(db.execute(held_query, held_args).fetchall())
            room = math.ceil(active / self.live_workers(now)) - mine
            if room > 0:
                query = (
                    f"SELECT s.id FROM subjects s WHERE s.job = ? AND s.superseded = 0"
                    f" AND s.state IN ({marks}) AND NOT EXISTS (SELECT 1 FROM leases l"
                    " WHERE l.subject_id = s.id AND l.expires_at > ?)"
                )
                args: list[object] = [self.job, *wanted, now]
                if only is not None:
                    query += f" AND s.id IN ({','.join('?' * len(only))})"
                    args += list(only)
                query += " ORDER BY s.id LIMIT ? FOR UPDATE OF s SKIP LOCKED"
                free = [int(r[0]) for r in db.execute(query, (*args, room))]
                if free:
                    db.executemany(
                        "INSERT INTO leases (subject_id, job, owner, expires_at) VALUES (?,?,?,?)"
                        " ON CONFLICT (subject_id) DO UPDATE SET owner = excluded.owner,"
                        " expires_at = excluded.expires_at WHERE leases.expires_at <= ?",
                        [(subject_id, self.job, self.owner, now + self.ttl, now)
                         for subject_id in free],
                    )
            ids = {int(r[0]) for r in db.execute(held_query, held_args)}
        return sorted(ids if only is None else ids & set(only))

    def renew(self, *, now: float) -> set[int]:
        """The heartbeat: push back the expiry of this worker's leases and roles; return
        the subjects it still holds (one another worker took after it expired is gone)."""
        with self.store.atomic() as db:
            db.execute("UPDATE workers SET seen_at = ? WHERE owner = ?", (now, self.owner))
            db.execute("UPDATE roles SET expires_at = ? WHERE owner = ?",
                       (now + self.ttl, self.owner))
            rows = db.execute(
                "UPDATE leases SET expires_at = ? WHERE owner = ? RETURNING subject_id",
                (now + self.ttl, self.owner),
            )
            return {int(r[0]) for r in rows}

    def holder(self, subject_id: int, *, now: float) -> str | None:
        """The worker holding a live lease on the subject, if any."""
        row = self.store._db.execute(
            "SELECT owner FROM leases WHERE subject_id = ? AND expires_at > ?", (subject_id, now)
        ).fetchone()
        return None if row is None else str(row[0])

    def take_role(self, role: str, *, now: float) -> bool:
        """Take (or keep) ``role`` unless a live worker holds it; whether this one does."""
        with self.store.atomic() as db:
            row = db.execute(
                "INSERT INTO roles (job, role, owner, expires_at) VALUES (?,?,?,?)"
                " ON CONFLICT (job, role) DO UPDATE SET owner = excluded.owner,"
                " expires_at = excluded.expires_at"
                " WHERE roles.owner = excluded.owner OR roles.expires_at <= ? RETURNING owner",
                (self.job, role, self.owner, now + self.ttl, now),
            ).fetchone()
        return row is not None


@dataclass(frozen=True)
class WorkerRow:
    """A worker of a job whose heartbeat is recent."""

    host: str
    pid: int
    started_at: float
    seen_at: float


def workers_alive(store: PostgresStore, job: str, *, now: float, ttl: float) -> list[WorkerRow]:
    """The job's workers whose heartbeat is recent, by host and process."""
    rows = store._db.execute(
        "SELECT host, pid, started_at, seen_at FROM workers WHERE job = ? AND seen_at > ?"
        " ORDER BY host, pid", (job, now - ttl),
    )
    return [WorkerRow(str(r[0]), int(r[1]), float(r[2]), float(r[3])) for r in rows]


class AccountWindow:
    """The account's images started per endpoint in the sliding window, in the database."""

    def __init__(self, store: PostgresStore, account: str) -> None:
        self.store = store
        self.account = account

    def take(self, endpoint: str, images: int, *, limit: int, window: float,
             now: float) -> float | None:
        """Count ``images`` as started now if they fit; else the seconds to wait first."""
        key = f"lora-pipeline rate {self.account} {endpoint}"
        with self.store.atomic() as db:
            db.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (key,))
            paused = db.execute(
                "SELECT until FROM rate_pause WHERE account = ? AND endpoint = ?",
                (self.account, endpoint),
            ).fetchone()
            if paused is not None and paused[0] > now:
                return float(paused[0]) - now
            db.execute("DELETE FROM rate_window WHERE account = ? AND endpoint = ? AND at <= ?",
                       (self.account, endpoint, now - window))
            used, oldest = db.execute(
                "SELECT COALESCE(SUM(images), 0), MIN(at) FROM rate_window"
                " WHERE account = ? AND endpoint = ?", (self.account, endpoint),
            ).fetchone()
            if int(used) + images <= limit:
                db.execute(
                    "INSERT INTO rate_window (account, endpoint, at, images) VALUES (?,?,?,?)",
                    (self.account, endpoint, now, images),
                )
                return None
            return max(0.01, float(oldest) + window - now)

    def pause(self, endpoint: str, *, until: float) -> None:
        """The service said 429: no worker starts any image before ``until``."""
        with self.store.atomic() as db:
            db.execute(
                "INSERT INTO rate_pause (account, endpoint, until) VALUES (?,?,?)"
                " ON CONFLICT (account, endpoint) DO UPDATE"
                " SET until = GREATEST(rate_pause.until, excluded.until)",
                (self.account, endpoint, until),
            )
