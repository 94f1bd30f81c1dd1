"""Reading one photo of a subject folder: bounded, checked while it is read, measured once.

:func:`inspect_all` reads every candidate photo of a folder on a few threads, at most
:data:`MAX_READS` at once in the whole process, and answers for each either its
:class:`Content` (hash, detected format, size, and the photo gate's measures, from the cache
when it has them) or a :class:`Rejection` with a sentence naming the file and what to do.
A photo is opened the one safe way (:func:`~pipeline.inputs.safe_files.open_inbox_file`),
read only when the file opened is the one reached from the inbox with no link on the way,
refused from its size before a byte is read when it is over :data:`MAX_PHOTO_BYTES`, read
whole, and refused as changing when its size, time or inode moved while it was read. Its
header's claimed size is checked against the pixel bound and :data:`MAX_ASPECT_RATIO`
before anything is decoded.
:mod:`pipeline.inputs.dataset` sorts the answers into what is used and what is not.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from PIL import Image, UnidentifiedImageError

from pipeline.inputs.image_formats import (
    ACCEPTED_FORMATS,
    CONVERTED_FORMATS,
    HEAD_BYTES,
    DamagedHeader,
    ImageFormat,
    detect_format,
    format_label,
    header_size,
    open_problem,
)
from pipeline.inputs.photo_cache import MeasureCache
from pipeline.inputs.photo_checks import PhotoMeasures, PhotoSettings, measure_photo
from pipeline.inputs.photo_formats import open_photo
from pipeline.inputs.safe_files import RefusedFile, open_beneath, open_inbox_file, size_text

__all__ = [
    "HASH_CHUNK_BYTES",
    "MAX_ASPECT_RATIO",
    "MAX_PHOTO_BYTES",
    "Candidate",
    "Content",
    "Gate",
    "Rejection",
    "Stopped",
    "inspect_all",
]

HASH_CHUNK_BYTES: Final = 1 << 20
#: A photo's size on disk; one larger is refused from its size, unread. A 40-megapixel PNG
#: is about 30 MiB and the service wants far less, so only a mistake or a trick is refused.
MAX_PHOTO_BYTES: Final = 50 << 20
#: How much longer one side may be than the other. Training crops a square; a panorama is
#: 3 to 8 times as wide as high. A 1x40,000,000 strip is within the pixel bound and cost
#: 1.7 s and 370 MB to decode (Pillow keeps a pointer per row).
MAX_ASPECT_RATIO: Final = 10


class Stopped(Exception):
    """Validation was asked to stop (the pass is ending): nothing it found is kept."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """A file left out of the training, with a sentence naming it and what to do.

    ``transient`` marks a file that changed while being read: it says nothing about the
    photo itself, and the next pass will look at it again.
    """

    name: str
    reason: str
    transient: bool = False
    thumbnail: bytes | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    """A file of the folder that may be a photo."""

    name: str  # display name
    real_name: str
    path: Path  # what to read: the file, or a symlink's checked target


@dataclass(frozen=True, slots=True)
class Content:
    """What reading one photo found: its hash, format, size and the gate's measures."""

    sha256: str
    format: str  # as detected: png, jpeg, webp, heic or avif
    size_bytes: int
    measures: PhotoMeasures

    @property
    def upload_format(self) -> ImageFormat:
        return ACCEPTED_FORMATS.get(self.format, "jpeg")


@dataclass(frozen=True, slots=True)
class Gate:
    """How this folder's photos are judged: the settings, whether faces are required, where
    measures are kept, the pixel bound, and the inbox every photo must be reached from with
    no link on the way (None: bytes are judged, not files)."""

    settings: PhotoSettings
    faces: bool
    cache: MeasureCache | None
    max_pixels: int
    root: Path | None = None


def _open_for_read(path: Path) -> io.BufferedReader:
    """A photo, opened the one safe way (:func:`~pipeline.inputs.safe_files.open_inbox_file`).

    ``path`` is never a link here: a link was resolved and checked when the folder was listed.
    A folder on its way may have become one since: :func:`_reached_beneath` looks.
    """
    return open_inbox_file(path)


def _reached_beneath(fp: io.BufferedReader, path: Path, root: Path | None) -> bool:
    """Whether the opened ``fp`` is the file reached from ``root`` with no link followed on
    the way (:func:`~pipeline.inputs.safe_files.open_beneath`, which raises
    :class:`RefusedFile` for a link): a subject folder renamed and replaced by a link after
    it was listed would otherwise have a file outside the inbox read, measured and shown in
    the report. False when the two differ: the file changed between them."""
    if root is None:
        return True
    with open_beneath(root, path) as beneath:
        reached = os.fstat(beneath.fileno())
    opened = os.fstat(fp.fileno())
    return (reached.st_dev, reached.st_ino) == (opened.st_dev, opened.st_ino)


def _claimed_size(data: bytes, detected: str) -> tuple[int, int] | None:
    """The size the file's header claims, before any pixel is decoded. Raises Pillow's
    ``DecompressionBombError`` for a HEIC or AVIF claiming more than Pillow opens at all."""
    if detected in CONVERTED_FORMATS:
        try:
            with open_photo(io.BytesIO(data)) as image:  # reads the header only
                return image.size
        except Image.DecompressionBombError:
            raise
        except Exception:  # a damaged header is worded by the caller
            return None
    return header_size(io.BytesIO(data), data[:HEAD_BYTES], detected)


def _measured(data: bytes, sha256: str, gate: Gate) -> PhotoMeasures:
    if gate.cache is not None:
        cached = gate.cache.get(sha256, find_faces=gate.faces)
        if cached is not None:
            return cached
    measures = measure_photo(io.BytesIO(data), find_faces=gate.faces)
    if gate.cache is not None:
        gate.cache.put(sha256, find_faces=gate.faces, measures=measures)
    return measures


def _read_content(data: bytes, name: str, gate: Gate) -> Content | Rejection:
    detected = detect_format(data[:HEAD_BYTES])
    if detected is None or (detected not in ACCEPTED_FORMATS
                            and detected not in CONVERTED_FORMATS):
        return Rejection(
            name,
            f"{name} is {format_label(detected)}, not png/jpeg/webp (or HEIC/AVIF): "
            "convert it to PNG or JPEG, or remove it",
        )
    label = {"heic": "HEIC/HEIF"}.get(detected, detected.upper())
    try:
        size = _claimed_size(data, detected)
    except DamagedHeader as exc:
        return Rejection(
            name, f"{name} is a damaged {label} file ({exc}): export or copy it again"
        )
    except Image.DecompressionBombError:
        return Rejection(
            name,
            f"{name} claims a picture of more than {2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6:,.0f} "
            f"megapixels, over the {gate.max_pixels / 1e6:g}-megapixel limit: scale it down "
            "(2048 px on the long side is plenty)",
        )
    if size is None:
        return Rejection(
            name,
            f"{name} is a damaged {label} file (no readable size in its header): "
            "export or copy it again",
        )
    width, height = size
    if width * height > gate.max_pixels:
        return Rejection(
            name,
            f"{name} is {width}x{height} ({width * height / 1e6:.0f} megapixels), over the "
            f"{gate.max_pixels / 1e6:g}-megapixel limit: scale it down (2048 px on the long "
            "side is plenty)",
        )
    if max(width, height) > MAX_ASPECT_RATIO * max(1, min(width, height)):
        return Rejection(
            name,
            f"{name} is {width}x{height}, a strip rather than a photo (one side over "
            f"{MAX_ASPECT_RATIO} times the other): crop it around the subject, or remove it",
        )
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        measures = _measured(data, sha256, gate)
    # A damaged file can make any decoder raise almost anything (OSError, SyntaxError,
    # struct.error, ValueError, DecompressionBombError...): each is a reason to reject.
    except Exception as exc:
        problem = str(exc) or type(exc).__name__
        if isinstance(exc, UnidentifiedImageError):  # its message names a BytesIO object
            problem = open_problem(io.BytesIO(data), detected)
        return Rejection(
            name, f"{name} is a damaged {label} file ({problem}): export or copy it again"
        )
    if measures.stored_size != size or _pillow_name(detected) != measures.format:
        shown = f"{measures.stored_size[0]}x{measures.stored_size[1]}"
        return Rejection(
            name,
            f"{name} is a damaged {label} file (its header says {width}x{height} but it "
            f"decodes as a {measures.format} of {shown}): export or copy it again",
        )
    return Content(sha256, detected, len(data), measures)


def _pillow_name(detected: str) -> str:
    return "heif" if detected == "heic" else detected


def _read_bounded(fp: IO[bytes]) -> bytes:
    """The rest of ``fp``, read in chunks; reading stops past :data:`MAX_PHOTO_BYTES` (a
    file that grew while read: its length shows it)."""
    chunks: list[bytes] = []
    total = 0
    while total <= MAX_PHOTO_BYTES and (chunk := fp.read(HASH_CHUNK_BYTES)):
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def _stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev


def _changed(name: str) -> Rejection:
    return Rejection(
        name,
        f"{name} changed while being read: will be checked again on the next pass",
        transient=True,
    )


def _too_large(name: str, size: int) -> Rejection:
    return Rejection(
        name,
        f"{name} is {size / (1 << 20):,.0f} MiB, over the {size_text(MAX_PHOTO_BYTES)} a photo "
        "may be: export it smaller (a JPEG of 2048 px on the long side is a few MiB), or "
        "remove it",
    )


def _unreadable(name: str, exc: OSError) -> Rejection:
    if isinstance(exc, PermissionError):
        return Rejection(
            name,
            f"{name} cannot be read (permission denied): make it readable by the "
            "pipeline's user (chmod a+r), or remove it",
        )
    return Rejection(name, f"{name} cannot be read ({exc.strerror or exc}): copy it again")


def _inspect(candidate: Candidate, gate: Gate) -> Content | Rejection:
    name = candidate.name
    try:
        with _open_for_read(candidate.path) as fp:
            if not _reached_beneath(fp, candidate.path, gate.root):
                return _changed(name)
            opened = os.fstat(fp.fileno())
            if opened.st_size == 0:
                return Rejection(name, f"{name} is empty (0 bytes): copy the photo again")
            if opened.st_size > MAX_PHOTO_BYTES:
                return _too_large(name, opened.st_size)
            data = _read_bounded(fp)
        after = os.stat(candidate.path)
    except RefusedFile as exc:
        return Rejection(
            name, f"{name} {exc.problem}: replace it with the photo itself, or remove it"
        )
    except FileNotFoundError:
        return _changed(name)
    except OSError as exc:
        return _unreadable(name, exc)
    # Checked before the content: a half-copied file looks damaged, but that is not final.
    if _stamp(opened) != _stamp(after) or len(data) != opened.st_size:
        return _changed(name)
    return _read_content(data, name, gate)


#: Photos of one folder measured at once: OpenCV and libjpeg release the GIL while they work.
MAX_MEASURE_THREADS: Final = 2
#: Photos read and decoded at once in the whole process, whatever the number of folders and
#: threads: a photo is held whole (up to MAX_PHOTO_BYTES), and a 40-megapixel PNG, which
#: cannot be decoded reduced, takes up to some 200 MB more while it is measured (measured:
#: RGBA 190, 16-bit grey 120, palette 75); an animated WebP on a 36-megapixel canvas 600,
#: in libwebp's canvases.
MAX_READS: Final = 2
_reading = threading.BoundedSemaphore(MAX_READS)


def inspect_all(
    candidates: list[Candidate], gate: Gate, stop: threading.Event | None
) -> list[Content | Rejection]:
    """:func:`_inspect` of every candidate, in order, on a few threads. Raises
    :class:`Stopped` once ``stop`` is set (before the next file is read)."""

    def one(candidate: Candidate) -> Content | Rejection:
        with _reading:
            if stop is not None and stop.is_set():
                raise Stopped
            return _inspect(candidate, gate)

    workers = min(len(candidates), os.cpu_count() or 1, MAX_MEASURE_THREADS)
    if workers <= 1:
        return [one(candidate) for candidate in candidates]
    with ThreadPoolExecutor(workers, thread_name_prefix="photos") as pool:
        try:
            return list(pool.map(one, candidates))
        except Stopped:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


