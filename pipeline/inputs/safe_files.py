"""Opening a file of the inbox, where everything is untrusted and the reader may be root.

:func:`open_inbox_file` is how the pipeline opens a photo, a caption sidecar or a
``subject.toml``; :func:`read_inbox_file` reads a small one whole, up to a cap.
:func:`open_beneath` opens a file already known to lie below the inbox without following a
link anywhere on its way, so a folder swapped for a link between a check and a read is
refused rather than followed; :func:`read_beneath` is its small-file twin. All raise
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

import errno
import io
import os
import stat
from pathlib import Path
from typing import Final

__all__ = [
    "RefusedFile",
    "open_beneath",
    "open_inbox_file",
    "read_beneath",
    "read_inbox_file",
    "size_text",
]

_READ_FLAGS: Final = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)
#: A folder on the way to a file: never through a link, never blocking, never a tty.
_FOLDER_FLAGS: Final = _READ_FLAGS | getattr(os, "O_DIRECTORY", 0)


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
        return _read_capped(stream, path, limit)


def _read_capped(stream: io.BufferedReader, path: Path, limit: int) -> bytes:
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise RefusedFile(path, f"is larger than {size_text(limit)}")
    return data


def _parts_below(root: Path, path: Path) -> tuple[str, ...]:
    """The names leading from ``root`` to ``path``, spelt either way the root can be (as
    given, or with its own links resolved); refused when ``path`` is not below it.

    ``..`` is taken lexically (``abspath``): the walk follows no link, so that is where it
    leads."""
    target = Path(os.path.abspath(path))
    for base in (Path(os.path.abspath(root)), Path(os.path.realpath(root))):
        if target != base and target.is_relative_to(base):
            return target.relative_to(base).parts
    raise RefusedFile(path, "is not inside the inbox")


def _refused_on_the_way(path: Path, folder: int, name: str, where: Path) -> RefusedFile:
    """Why the folder ``name`` (in the open ``folder``) could not be entered: with
    ``O_NOFOLLOW | O_DIRECTORY`` Linux says ENOTDIR for a link, some systems ELOOP."""
    try:
        is_link = stat.S_ISLNK(os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode)
    except OSError:
        is_link = False
    if is_link:
        return RefusedFile(path, f"is reached through a link ({where}), which is not followed")
    return RefusedFile(path, f"is reached through {where}, which is not a folder")


def open_beneath(root: Path, path: Path) -> io.BufferedReader:
    """Open ``path``, a regular file below ``root`` (the inbox), following no link on the way.

    The walk starts at ``root`` (the operator's folder, opened as it is named) and opens each
    folder below it relative to the one before, with ``O_NOFOLLOW``: a subject folder renamed
    and replaced by a link, at any moment, ends the walk instead of leading elsewhere. The
    descriptor returned is what was checked; read it as many times as needed (``seek(0)``)
    rather than opening the name again. Raises :class:`RefusedFile` (a link or a file on
    the way, anything but a regular file at the end, a path not below ``root``) or the
    ``OSError`` of the walk (``FileNotFoundError`` when something on the way is gone).

        >>> with open_beneath(inbox, inbox / "alice" / "1.png") as photo:
        ...     digest = hashlib.file_digest(photo, "sha256")
    """
    parts = _parts_below(root, path)
    folder = os.open(root, _FOLDER_FLAGS & ~getattr(os, "O_NOFOLLOW", 0))
    try:
        for depth, name in enumerate(parts[:-1], start=1):
            try:
                inner = os.open(name, _FOLDER_FLAGS, dir_fd=folder)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                raise _refused_on_the_way(path, folder, name, Path(*parts[:depth])) from exc
            os.close(folder)
            folder = inner
        before = os.stat(parts[-1], dir_fd=folder, follow_symlinks=False)
        if not stat.S_ISREG(before.st_mode):
            raise _not_regular(path, before.st_mode)  # a device is not even opened
        try:
            fd = os.open(parts[-1], _READ_FLAGS, dir_fd=folder)
        except OSError as exc:  # turned into a link since the look just above
            if exc.errno == errno.ELOOP:
                raise RefusedFile(path, "is not a regular file (a link)") from exc
            raise
    finally:
        os.close(folder)
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            raise _not_regular(path, opened.st_mode)
        raw = io.FileIO(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    raw.name = os.fspath(path)  # named as open(path) would be, not by its descriptor
    return io.BufferedReader(raw)


def read_beneath(root: Path, path: Path, *, limit: int) -> bytes:
    """The bytes of ``path``, opened as :func:`open_beneath` does; a file of more than
    ``limit`` bytes is refused (:class:`RefusedFile`) after reading at most ``limit + 1``."""
    with open_beneath(root, path) as stream:
        return _read_capped(stream, path, limit)
