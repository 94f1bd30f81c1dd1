"""What the photo gate measured, kept by content hash: a photo is decoded once.

:class:`PhotoCache` is a small SQLite file of its own (``photo-checks.db``, beside the job's
state), not part of the state: losing it costs only the time to measure again. It holds
:class:`~pipeline.inputs.photo_checks.PhotoMeasures` (facts about a photo's content, never
judged under settings), keyed by the photo's sha256 and whether faces were looked for. A
row that is too long or holds what no photo measures (a size of -1, a hash that is not hex,
a thumbnail that is not a JPEG) is a miss too.
Intake calls it from several worker threads; one connection serves them under a lock, each
call is one statement. A cache that cannot be read or written is a miss, with one warning in
the log, never a failed intake.

    >>> with PhotoCache.open(state_dir / CACHE_FILE) as cache:
    ...     measures = cache.get(sha256, find_faces=True)
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Final, Protocol
from urllib.parse import quote

import structlog

from pipeline.inputs.photo_checks import PhotoMeasures

__all__ = ["CACHE_FILE", "MeasureCache", "PhotoCache"]

log = structlog.get_logger(__name__)

CACHE_FILE: Final = "photo-checks.db"
#: Bumped when what :func:`~pipeline.inputs.photo_checks.measure_photo` measures changes:
#: rows of another version are not used. 2: a multi-picture JPEG is a JPEG; metadata is
#: whatever the upload drops (IPTC, vendor segments, trailers, unknown chunks), not a list.
MEASURES_VERSION: Final = 2
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS measures (
    sha256 TEXT NOT NULL,
    faces INTEGER NOT NULL,
    version INTEGER NOT NULL,
    measures TEXT NOT NULL,
    PRIMARY KEY (sha256, faces, version)
)
"""


#: A row is a few KiB (the thumbnail, base64); a longer one is not read.
MAX_ROW_CHARS: Final = 256 << 10
_FORMATS: Final = frozenset({"png", "jpeg", "webp", "heif", "avif"})
_MAX_SIDE: Final = 1 << 20


def _plausible(measures: PhotoMeasures) -> PhotoMeasures:
    """``measures`` if :func:`~pipeline.inputs.photo_checks.measure_photo` could have
    written them; raises ``ValueError`` for a row that is not ours (its values reach the
    verdicts, the near-duplicate hashes and the report's thumbnails)."""
    width, height = measures.stored_size
    turned = measures.orientation in (5, 6, 7, 8)
    checks = (
        measures.format in _FORMATS,
        0 < width <= _MAX_SIDE and 0 < height <= _MAX_SIDE,
        measures.size == ((height, width) if turned else (width, height)),
        1 <= measures.orientation <= 8 and measures.frames >= 1,
        len(measures.phash) == 16 and all(c in "0123456789abcdef" for c in measures.phash),
        0 <= measures.sharpness < float("inf") and 0 <= measures.brightness <= 255,
        measures.thumbnail.startswith(b"\xff\xd8") and len(measures.thumbnail) < MAX_ROW_CHARS,
        all(box.x >= 0 and box.y >= 0 and box.width > 0 and box.height > 0
            for box in measures.faces or ()),
    )
    if not all(checks):
        raise ValueError("measures no photo has")
    return measures


class MeasureCache(Protocol):
    """What validation needs from a cache of measures."""

    def get(self, sha256: str, *, find_faces: bool) -> PhotoMeasures | None: ...

    def put(self, sha256: str, *, find_faces: bool, measures: PhotoMeasures) -> None: ...


class PhotoCache:
    """Measures by content hash in a SQLite file; safe to share between threads."""

    def __init__(
        self, db: sqlite3.Connection | None, path: Path, *, read_only: bool = False
    ) -> None:
        self._db = db
        self._path = path
        self._read_only = read_only
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path) -> PhotoCache:
        """The cache at ``path``, created when missing. A link there, or a file SQLite
        cannot use, gives a cache that remembers nothing."""
        try:
            if path.is_symlink():
                raise sqlite3.OperationalError("a link stands where the cache file belongs")
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, timeout=5.0, check_same_thread=False,
                                 isolation_level=None)
            db.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            log.warning("photo_cache.unusable", path=str(path), error=str(exc),
                        hint="photos are measured again on each intake")
            return cls(None, path)
        return cls(db, path)

    @classmethod
    def open_read_only(cls, path: Path) -> PhotoCache:
        """The cache at ``path`` for looking only (``plan``): never created or written;
        a missing or unusable file gives a cache that remembers nothing."""
        if path.is_symlink() or not path.is_file():
            return cls(None, path, read_only=True)
        try:
            uri = "file:" + quote(os.fsencode(path.absolute())) + "?mode=ro"
            db = sqlite3.connect(uri, uri=True, timeout=5.0, check_same_thread=False,
                                 isolation_level=None)
        except sqlite3.Error:
            return cls(None, path, read_only=True)
        return cls(db, path, read_only=True)

    def get(self, sha256: str, *, find_faces: bool) -> PhotoMeasures | None:
        row = self._run(
            "SELECT measures FROM measures WHERE sha256 = ? AND faces = ? AND version = ?"
            " AND length(measures) <= ?",
            (sha256, int(find_faces), MEASURES_VERSION, MAX_ROW_CHARS),
        )
        if row is None:
            return None
        try:
            return _plausible(PhotoMeasures.from_json(row[0]))
        except (ValueError, KeyError, TypeError):
            return None  # not ours, or damaged: measured again and written over

    def put(self, sha256: str, *, find_faces: bool, measures: PhotoMeasures) -> None:
        if self._read_only:
            return
        self._run(
            "INSERT OR REPLACE INTO measures VALUES (?, ?, ?, ?)",
            (sha256, int(find_faces), MEASURES_VERSION, measures.to_json()),
        )

    def _run(self, sql: str, args: tuple[object, ...]) -> tuple[str] | None:
        with self._lock:
            if self._db is None:
                return None
            try:
                row: tuple[str] | None = self._db.execute(sql, args).fetchone()
            except sqlite3.Error as exc:
                log.warning("photo_cache.unusable", path=str(self._path), error=str(exc),
                            hint="photos are measured again on each intake")
                self._db.close()
                self._db = None
                return None
            return row

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> PhotoCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
