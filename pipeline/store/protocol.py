"""The rows the store hands out and the protocol every store backend implements.

Stages never talk SQL: they call the methods of :class:`StateStore`, a small protocol that a
second backend (PostgreSQL, say) can implement without touching them. Every change of state
goes through :meth:`StateStore.transition` (subjects) or
:meth:`StateStore.transition_generation`, a compare-and-set checked against
:mod:`pipeline.store.states`; the intent of a paid request carries its ledger row
(:class:`~pipeline.store.ledger.Charge`) into that same transaction.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .ledger import Charge, LedgerEntry, Tally

SubjectId = int


class Database(Protocol):
    """A DB-API connection as the store's queries use it: ``sqlite3.Connection``, or the
    PostgreSQL one of :mod:`pipeline.store.postgres`. Rows answer both ``row[0]`` and
    ``row["name"]``, and ``SubjectRow(**row)``."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...
    def executemany(self, sql: str, parameters: Any, /) -> Any: ...


@dataclass(frozen=True)
class SubjectRow:
    """One version of one subject folder."""

    id: SubjectId
    job: str
    name: str
    version: int
    fingerprint: str
    kind: str
    state: str
    image_count: int
    training_name: str | None
    task_id: str | None
    task_status: str | None
    progress: int | None
    eta: int | None
    model_name: str | None
    lora_path: str | None
    error: str | None
    warnings: str | None
    attempts: int
    created_at: float
    updated_at: float
    submitted_at: float | None
    trained_at: float | None
    serving_at: float | None
    finished_at: float | None
    superseded: int
    #: The version's resolved settings, frozen at intake (JSON; see the engine).
    frozen: str | None = None
    #: The newest change of the folder that intake has already looked at.
    inbox_seen: float | None = None

    @property
    def warning_list(self) -> list[str]:
        return list(json.loads(self.warnings)) if self.warnings else []


@dataclass(frozen=True)
class ImageRow:
    """An accepted image. ``file`` is its path as raw bytes: any name the OS allows
    (odd bytes included) survives the round trip; ``name`` is for people."""

    subject_id: SubjectId
    name: str
    file: bytes
    sha256: str
    format: str
    caption: str | None
    assets_id: str | None
    faces: int | None = None
    sharpness: float | None = None
    changes: str | None = None  # JSON list: what the upload does to the file

    @property
    def path(self) -> Path:
        return Path(os.fsdecode(self.file))

    @property
    def change_list(self) -> list[str]:
        """What the upload does to the file; empty when its exact bytes are sent."""
        return [str(change) for change in json.loads(self.changes)] if self.changes else []


@dataclass(frozen=True)
class RejectionRow:
    subject_id: SubjectId
    name: str
    reason: str
    thumbnail: bytes | None = None


@dataclass(frozen=True)
class InitImageUse:
    """What an img2img generation starts from: the init image as people name it (a path),
    the sha256 of its bytes (kept in the state: :meth:`StateStore.init_image`), and how
    much the picture may change (``strength``, 0..1)."""

    image: str
    sha256: str
    strength: float


@dataclass(frozen=True)
class GenerationRow:
    """One prompt of one subject: one txt2img task, or one img2img task when it has an init
    image (re-submitted only after a loss)."""

    id: int
    subject_id: SubjectId
    prompt_index: int
    slug: str
    prompt: str
    state: str
    task_id: str | None
    seed: int | None
    image_count: int
    submissions: int
    error: str | None
    created_at: float
    updated_at: float
    #: Creates sent again after an answer that was lost (the README's policy).
    uncertain: int = 0
    #: An img2img prompt's init image (see :class:`InitImageUse`); None for txt2img.
    init_image: str | None = None
    init_sha256: str | None = None
    strength: float | None = None

    @property
    def init(self) -> InitImageUse | None:
        """What this generation starts from, when it is an img2img one."""
        if self.init_image is None or self.init_sha256 is None or self.strength is None:
            return None
        return InitImageUse(self.init_image, self.init_sha256, self.strength)

    @property
    def endpoint(self) -> str:
        """``txt2img`` or ``img2img``: the service's name for how it is generated."""
        return "txt2img" if self.init_sha256 is None else "img2img"


@dataclass(frozen=True)
class RequestRow:
    """A person's request (cancel, retry, regenerate) waiting for the engine to act on it."""

    id: int
    job: str
    subject: str
    action: str
    args: str | None
    created_at: float
    done_at: float | None
    outcome: str | None

    @property
    def arguments(self) -> dict[str, Any]:
        return dict(json.loads(self.args)) if self.args else {}


@dataclass(frozen=True)
class OutputRow:
    generation_id: int
    image_index: int
    path: str


@dataclass(frozen=True)
class NewImage:
    """An accepted image, as validation hands it to the store."""

    name: str
    path: Path
    sha256: str
    format: str
    caption: str | None
    faces: int | None = None
    sharpness: float | None = None
    changes: tuple[str, ...] = ()


#: A refused file: ``(file, reason)``, or with a thumbnail (a small JPEG) of the photo.
NewRejection = tuple[str, str] | tuple[str, str, bytes | None]


class StateStore(Protocol):
    """What the stages need from a state backend."""

    def add_version(
        self, job: str, name: str, fingerprint: str, kind: str, *, state: str, now: float,
        images: Sequence[NewImage] = (), rejections: Sequence[NewRejection] = (),
        warnings: Sequence[str] = (), error: str | None = None, frozen: str | None = None,
    ) -> SubjectRow: ...
    def latest(self, job: str, name: str) -> SubjectRow | None: ...
    def subject(self, subject_id: SubjectId) -> SubjectRow: ...
    def subjects(self, job: str, *, states: Iterable[str] | None = None) -> list[SubjectRow]: ...
    def update_subject(
        self, subject_id: SubjectId, *, now: float, charge: Charge | None = None, **values: Any
    ) -> SubjectRow: ...
    def transition(
        self, subject_id: SubjectId, *, expected: str, to: str, now: float,
        charge: Charge | None = None, **values: Any,
    ) -> SubjectRow: ...
    def images(self, subject_id: SubjectId) -> list[ImageRow]: ...
    def rejections(self, subject_id: SubjectId) -> list[RejectionRow]: ...
    def set_image_asset(self, subject_id: SubjectId, sha256: str, assets_id: str) -> None: ...
    def cached_asset(self, sha256: str) -> str | None: ...
    def remember_asset(self, sha256: str, assets_id: str, *, now: float) -> None: ...
    def ensure_generations(
        self, subject_id: SubjectId, prompts: Sequence[tuple[int, str, str]], *, now: float,
        img2img: Mapping[int, InitImageUse] | None = None,
    ) -> list[GenerationRow]: ...
    def keep_init_images(self, images: Mapping[str, bytes], *, now: float) -> None: ...
    def init_image(self, sha256: str) -> bytes | None: ...
    def generations(self, subject_id: SubjectId) -> list[GenerationRow]: ...
    def update_generation(
        self, generation_id: int, *, now: float, charge: Charge | None = None, **values: Any
    ) -> None: ...
    def transition_generation(
        self, generation_id: int, *, expected: str, to: str, now: float,
        charge: Charge | None = None, **values: Any,
    ) -> None: ...
    def settle_charge(
        self, subject_id: SubjectId, *, generation_id: int | None = None, outcome: str,
        now: float, every_open: bool = False,
    ) -> None: ...
    def ledger(self, job: str) -> list[LedgerEntry]: ...
    def spent(self, job: str, *, pass_id: str | None = None) -> Tally: ...
    def record_output(self, generation_id: int, image_index: int, path: str) -> None: ...
    def outputs(self, subject_id: SubjectId) -> list[OutputRow]: ...
    def add_request(
        self, job: str, subject: str, action: str, args: dict[str, Any], *, now: float
    ) -> int: ...
    def open_requests(self, job: str) -> list[RequestRow]: ...
    def finish_request(self, request_id: int, *, now: float, outcome: str) -> None: ...
    def close(self) -> None: ...


