"""Init images of img2img prompts: found, read and judged before anything is paid for.

An img2img prompt names the picture it starts from (``init_image``). The picture is read
when the job file is loaded and again when a subject is taken in, never later: a bad one is
a :class:`InitImageRefused` (a ``ValueError``) with a sentence naming the file and what to
do, which the job file's loader turns into its error. What is accepted is what the service
takes (section 6 of the API notes): png, jpeg or webp judged by content, at most
:data:`~pipeline.api.contract.MAX_INIT_IMAGE_BYTES` bytes and
:data:`~pipeline.api.contract.MAX_INIT_IMAGE_PIXELS` pixels, decodable whole.

An init image may be in one of two places:

- named by the job file (:func:`read_job_image`): the operator's own file, anywhere but in
  the inbox, where it would be taken for a subject's folder or photo. A link is followed.
- named by a ``subject.toml`` (:func:`read_subject_image`): inbox input, so only inside that
  subject's own folder, in a subfolder of it (a picture directly in the folder is one of
  its training photos), read from the inbox down with no link followed on the way, as
  ``subject.toml`` itself is.

    >>> image = read_job_image(Path("/srv/jobs/refs/pose.jpg"), inbox=Path("/srv/inbox"))
    >>> image.format, image.size, image.sha256[:12]
    ('jpeg', (768, 1024), '5d41402abc4b')
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from PIL import Image, UnidentifiedImageError

from ..api.contract import MAX_INIT_IMAGE_BYTES, MAX_INIT_IMAGE_PIXELS
from .image_formats import (
    ACCEPTED_FORMATS,
    HEAD_BYTES,
    DamagedHeader,
    ImageFormat,
    detect_format,
    format_label,
    header_size,
    open_problem,
)
from .safe_files import RefusedFile, open_beneath, open_inbox_file

__all__ = [
    "InitImage",
    "InitImageRefused",
    "judge_init_image",
    "read_job_image",
    "read_subject_image",
]

#: The operator names the job's init images: a link to anywhere is followed.
_ANYWHERE: Final = Path("/")
#: Init images decoded at once in the whole process: one is held whole, up to 10 MB, and a
#: 16-megapixel picture takes some 64 MB more while it is decoded.
_decoding = threading.BoundedSemaphore(1)
_PILLOW_NAMES: Final = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


class InitImageRefused(ValueError):
    """An init image that cannot be sent; the message names the file and what to do."""


@dataclass(frozen=True)
class InitImage:
    """An init image as read and judged: its bytes are what img2img is sent."""

    path: Path
    sha256: str
    format: ImageFormat
    size: tuple[int, int]
    data: bytes = field(repr=False)


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


def judge_init_image(path: Path, data: bytes) -> InitImage:
    """``data`` (the bytes of ``path``) as an init image, or :class:`InitImageRefused`."""
    if not data:
        raise InitImageRefused(f"{path} is empty (0 bytes): copy the picture again")
    if len(data) > MAX_INIT_IMAGE_BYTES:
        raise _too_large(path, len(data))
    detected = detect_format(data[:HEAD_BYTES])
    fmt = ACCEPTED_FORMATS.get(detected or "")
    if fmt is None:
        raise InitImageRefused(
            f"{path} is {format_label(detected)}, not png/jpeg/webp: img2img takes only "
            "those; convert it to PNG or JPEG"
        )
    label = fmt.upper()
    try:
        size = header_size(io.BytesIO(data), data[:HEAD_BYTES], fmt)
    except DamagedHeader as exc:
        raise InitImageRefused(
            f"{path} is a damaged {label} file ({exc}): export or copy it again"
        ) from None
    if size is None:
        raise InitImageRefused(
            f"{path} is a damaged {label} file (no readable size in its header): export or "
            "copy it again"
        )
    width, height = size
    if width * height > MAX_INIT_IMAGE_PIXELS:
        raise InitImageRefused(
            f"{path} is {width}x{height} ({width * height / 1e6:.1f} megapixels), over the "
            f"{MAX_INIT_IMAGE_PIXELS / 1e6:g} megapixels img2img takes: scale it down "
            "(2048 px on the long side is plenty)"
        )
    problem = _decode_problem(data, fmt, size)
    if problem is not None:
        raise InitImageRefused(
            f"{path} is a damaged {label} file ({problem}): export or copy it again"
        )
    return InitImage(path, hashlib.sha256(data).hexdigest(), fmt, size, data)


def _decode_problem(data: bytes, fmt: ImageFormat, size: tuple[int, int]) -> str | None:
    """Why ``data`` does not decode whole as a ``fmt`` of ``size``; None when it does."""
    try:
        with _decoding, Image.open(io.BytesIO(data), formats=[_PILLOW_NAMES[fmt]]) as image:
            image.load()
            decoded = image.size
    # A damaged file can make a decoder raise almost anything (OSError, SyntaxError,
    # struct.error, ValueError...): each is a reason to refuse it.
    except Exception as exc:
        if isinstance(exc, UnidentifiedImageError):  # its message names a BytesIO
            return open_problem(io.BytesIO(data), fmt)
        return str(exc) or type(exc).__name__
    if decoded != size:
        return f"its header says {size[0]}x{size[1]} but it decodes as {decoded[0]}x{decoded[1]}"
    return None


def _too_large(path: Path, size: int) -> InitImageRefused:
    return InitImageRefused(
        f"{path} is {_megabytes(size)}, over the {_megabytes(MAX_INIT_IMAGE_BYTES)} img2img "
        "takes: export it smaller (a JPEG of 2048 px on the long side is a few MB)"
    )


def _read(path: Path, stream: io.BufferedReader) -> bytes:
    """The whole of ``stream`` (``path`` opened), refused from its size before it is read
    when it is too large, and read at most one byte past the limit."""
    with stream:
        size = os.fstat(stream.fileno()).st_size
        if size > MAX_INIT_IMAGE_BYTES:
            raise _too_large(path, size)
        data = stream.read(MAX_INIT_IMAGE_BYTES + 1)
    if len(data) > MAX_INIT_IMAGE_BYTES:  # it grew while it was read
        raise _too_large(path, len(data))
    return data


def _unreadable(path: Path, exc: OSError, advice: str) -> InitImageRefused:
    if isinstance(exc, RefusedFile):
        return InitImageRefused(f"{path} {exc.problem}: {advice}")
    if isinstance(exc, FileNotFoundError):
        return InitImageRefused(f"{path} does not exist: check the name, or copy it there")
    if isinstance(exc, PermissionError):
        return InitImageRefused(
            f"{path} cannot be read (permission denied): make it readable by the "
            "pipeline's user (chmod a+r)"
        )
    return InitImageRefused(f"{path} cannot be read ({exc.strerror or exc}): copy it again")


def _inside(path: Path | str, folder: Path | str) -> bool:
    return Path(path) != Path(folder) and Path(path).is_relative_to(folder)


def read_job_image(path: Path, *, inbox: Path) -> InitImage:
    """The init image a job file names (an absolute path), read as the operator's file."""
    if _inside(os.path.realpath(path), os.path.realpath(inbox)):
        raise InitImageRefused(
            f"{path} is inside the inbox ({inbox}), where pictures are taken for subjects' "
            "photos: keep the job's init images beside the job file (in refs/, say)"
        )
    try:
        data = _read(path, open_inbox_file(path, root=_ANYWHERE))
    except InitImageRefused:
        raise
    except OSError as exc:
        raise _unreadable(path, exc, "name the picture itself") from exc
    return judge_init_image(path, data)


def read_subject_image(path: Path, *, folder: Path, inbox: Path) -> InitImage:
    """The init image a ``subject.toml`` names: ``path`` (made from ``folder`` and what the
    file says) must lead into a subfolder of ``folder``, which is in ``inbox``."""
    where = f"{folder.name}/"
    if not _inside(os.path.abspath(path), os.path.abspath(folder)):
        raise InitImageRefused(
            f"{path} is not inside {where}: a subject.toml may name only a picture in its "
            f"own folder, such as refs/pose.jpg for {where}refs/pose.jpg"
        )
    target = Path(os.path.realpath(path))
    real_folder = os.path.realpath(folder)
    if not _inside(target, real_folder):
        raise InitImageRefused(
            f"{path} is a link that points outside {where}: copy the picture itself there"
        )
    if str(target.parent) == real_folder:
        raise InitImageRefused(
            f"{path} is directly in {where}, where every picture is a training photo: move "
            f"it into a subfolder, such as {where}refs/, and name it so in subject.toml"
        )
    try:
        data = _read(path, open_beneath(inbox, target))
    except InitImageRefused:
        raise
    except OSError as exc:
        raise _unreadable(path, exc, "replace it with the picture itself") from exc
    return judge_init_image(path, data)
