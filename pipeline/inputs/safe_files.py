"""Opening a file of the inbox, where everything is untrusted and the reader may be root.

:func:`open_inbox_file` is how the pipeline opens a photo, a caption sidecar or a
``subject.toml``; :func:`read_inbox_file` reads a small one whole, up to a cap. Both raise
:class:`RefusedFile` for what must not be read:

- a link whose target leaves ``root`` (the inbox); with ``root=None`` no link is followed;
- anything but a regular file: a FIFO blocks a reader forever, a device such as
  ``/dev/zero`` never ends. Judged before opening (a device is not even opened) and again
  by ``fstat`` on the opened descriptor, since the name may change in between;
- more bytes than the caller's cap.

The open itself never blocks (``O_NONBLOCK``) and never follows a last-moment link
(``O_NOFOLLOW``).

    >>> data = read_inbox_file(inbox / "alice" / "subject.toml", limit=256 * 1024, root=inbox)
    >>> # RefusedFile: .../subject.toml is not a regular file (a FIFO)
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path
from typing import Final

__all__ = ["RefusedFile", "open_inbox_file", "read_inbox_file", "size_text"]

_READ_FLAGS: Final = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


class RefusedFile(OSError):
    """A file of the inbox that is not read; ``problem`` completes a sentence that starts
    with the file's name (``is not a regular file (a FIFO)``), the caller adds what to do."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path} {problem}")
        self.path = path
        self.problem = problem


def size_text(size: int) -> str:
    """``262144`` -> ``256 KiB``: a cap as people read it."""
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} bytes"


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISLNK(mode):
        return "a link"
    return "something else"


def _not_regular(path: Path, mode: int) -> RefusedFile:
    return RefusedFile(path, f"is not a regular file ({_kind(mode)})")


def _target(path: Path, root: Path | None) -> Path:
    """What to open: ``path`` itself, or with a ``root`` its resolved target inside it."""
    if root is None:
        return path
    target = Path(os.path.realpath(path))
    if not target.is_relative_to(os.path.realpath(root)):
        where = "is a link that points" if os.path.islink(path) else "is"
        raise RefusedFile(path, f"{where} outside the inbox")
    return target


def open_inbox_file(path: Path, *, root: Path | None = None) -> io.BufferedReader:
    """Open ``path`` for reading if it is a regular file, without blocking.

    ``root`` is the folder a link may lead to (the inbox; ``Path("/")`` for a file the
    operator named); without it a link is refused. Raises :class:`RefusedFile`, or the
    ``OSError`` of the open (``FileNotFoundError`` when there is no such file).
    """
    target = _target(path, root)
    try:
        before = os.lstat(target)
    except FileNotFoundError:
        if os.path.islink(path):
            raise RefusedFile(path, "is a broken link") from None
        raise
    if not stat.S_ISREG(before.st_mode):
        raise _not_regular(path, before.st_mode)
    fd = os.open(target, _READ_FLAGS)
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            raise _not_regular(path, opened.st_mode)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_inbox_file(path: Path, *, limit: int, root: Path | None = None) -> bytes:
    """The bytes of ``path``, opened as :func:`open_inbox_file` does; a file of more than
    ``limit`` bytes is refused (:class:`RefusedFile`) after reading at most ``limit + 1``."""
    with open_inbox_file(path, root=root) as stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise RefusedFile(path, f"is larger than {size_text(limit)}")
    return data
