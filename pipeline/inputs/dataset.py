"""Image validation and fingerprints: what in a subject folder can be trained, and why not.

:func:`validate_subject` looks at one subject folder and answers a :class:`DatasetReport`:
the accepted images (format judged by content, fully decodable, hashed), every rejected file
with a sentence saying what to do about it, warnings, and an ``error`` when the subject as a
whole cannot be trained. ``report.fingerprint`` is the subject's version: it changes when the
photos or their captions change, not when files are only renamed. What each format looks
like (magic bytes, header sizes, decoding) is in :mod:`pipeline.inputs.image_formats`.

Everything here is local, synchronous and reads one file at a time in chunks; call it through
``asyncio.to_thread`` from async code.

    >>> report = validate_subject(Path("inbox/alice"))
    >>> report.ok, len(report.accepted), report.fingerprint[:12]
    (True, 12, '3f0c9b1e5a7d')

Rules worth knowing:

- Only regular files directly in the folder are looked at; nested folders are reported in
  the warnings and not descended. Hidden files, OS litter, ``subject.toml``, caption
  sidecars (``*.txt``) and the ``.ready`` marker are ignored.
- Captions come from the ``captions`` mapping (the caller reads ``subject.toml``) or from a
  sidecar ``<stem>.txt`` next to the image; when both exist the mapping wins.
- ``ImageFile.name`` is the file name as text; a name that is not valid UTF-8 is shown with
  backslash escapes (``caf\\xe9.jpg``), while ``ImageFile.path`` keeps the real name.
- A symlink is followed only when its target stays inside ``root`` (the inbox); the resolved
  target becomes ``ImageFile.path``, so later reads go where the check went. A subject folder
  that leads outside ``root`` is not listed at all.
- Files are opened by :mod:`pipeline.inputs.safe_files`: regular files only, never blocking, caption
  sidecars read up to :data:`MAX_CAPTION_BYTES` from the inbox down with no link followed on
  the way (their text is sent to the service). A photo of more than :data:`MAX_PHOTO_BYTES`
  is refused from its size, before a byte of it is read. A folder of more than
  :data:`MAX_FOLDER_ENTRIES` entries is refused without being read further.
- A subject folder that is a link (inside the inbox) is listed through its resolved target,
  so every ``ImageFile.path`` leads to its photo without a link on the way, as the upload
  requires.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final, Literal

from pipeline.api.contract import (
    CONTENT_TYPES,
    MAX_TEXT_LENGTH,
    MAX_TRAINING_IMAGES,
    RECOMMENDED_TRAINING_IMAGES,
)
from pipeline.inputs.image_formats import (
    ImageFormat,
    detect_format,
)
from pipeline.inputs.near_duplicates import HashedPhoto, find_near_duplicates
from pipeline.inputs.photo_cache import MeasureCache
from pipeline.inputs.photo_checks import (
    PhotoAnalysis,
    PhotoSettings,
    Verdict,
    faces_required,
    judge_photo,
)
from pipeline.inputs.photo_files import (
    MAX_PHOTO_BYTES,
    Candidate,
    Gate,
    Rejection,
    Stopped,
    inspect_all,
)
from pipeline.inputs.safe_files import RefusedFile, read_beneath, size_text

__all__ = [
    "MAX_CAPTION_BYTES",
    "MAX_FOLDER_ENTRIES",
    "MAX_PHOTO_BYTES",
    "READY_MARKER",
    "SUBJECT_FILE",
    "DatasetReport",
    "ImageFile",
    "ImageFormat",
    "PhotoVerdict",
    "Rejection",
    "Stopped",
    "detect_format",
    "display_name",
    "is_ignored_name",
    "validate_subject",
]

Kind = Literal["subject", "style"]

SUBJECT_FILE: Final = "subject.toml"
READY_MARKER: Final = ".ready"
CAPTION_SUFFIX: Final = ".txt"
#: What operating systems, NAS boxes and zip tools leave behind (compared lower-cased).
LITTER_NAMES: Final = frozenset(
    {
        "thumbs.db",
        "ehthumbs.db",
        "desktop.ini",
        "icon\r",
        "__macosx",
        "$recycle.bin",
        "system volume information",
        "@eadir",
        "lost+found",
    }
)

FINGERPRINT_VERSION: Final = "lora-pipeline.inputs.dataset.v1"
MAX_LISTED_NAMES: Final = 5
#: A caption file is read up to this many bytes (8 per character is more than UTF-8 needs).
MAX_CAPTION_BYTES: Final = 8 * MAX_TEXT_LENGTH
#: Entries looked at in one subject folder (all levels): a subject is at most 50 photos.
MAX_FOLDER_ENTRIES: Final = 10_000


@dataclass(frozen=True, slots=True)
class ImageFile:
    """One accepted image: where it is, what it is, and its caption.

    ``format`` is what the service gets (a HEIC photo is sent as a jpeg); ``changes`` says
    what the upload does to the file, empty when its exact bytes are sent. ``width`` and
    ``height`` are as shown (EXIF orientation applied).
    """

    path: Path
    name: str
    sha256: str
    format: ImageFormat
    width: int
    height: int
    size_bytes: int
    caption: str | None
    faces: int | None = None
    sharpness: float | None = None
    changes: tuple[str, ...] = ()

    @property
    def content_type(self) -> str:
        """The MIME type to send with the upload (``image/png`` ...)."""
        return CONTENT_TYPES[self.format]

    @property
    def extension(self) -> ImageFormat:
        """The ``file_extension`` the upload API expects: ``png``, ``jpeg`` or ``webp``."""
        return self.format


@dataclass(frozen=True, slots=True)
class PhotoVerdict:
    """One file of the folder as ``validate`` shows it: the verdict, what was measured (None
    when the file was refused before it could be), what the upload changes, and why."""

    name: str
    verdict: Verdict
    faces: int | None
    sharpness: float | None
    changes: tuple[str, ...]
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DatasetReport:
    """What :func:`validate_subject` found in one subject folder."""

    subject: str
    folder: Path
    accepted: tuple[ImageFile, ...]
    rejected_files: tuple[Rejection, ...]
    warnings: tuple[str, ...]
    error: str | None
    photos: tuple[PhotoVerdict, ...] = ()
    ignored: tuple[str, ...] = ()
    good_face_photos: int | None = None
    face_photos_needed: int = 0

    @property
    def ok(self) -> bool:
        """True when the subject can be trained as it is."""
        return self.error is None and bool(self.accepted)

    @property
    def settled(self) -> bool:
        """False when a file changed during the scan: validate again before acting on it."""
        return not any(rejection.transient for rejection in self.rejected_files)

    @property
    def fingerprint(self) -> str:
        """The subject's version: sha256 over the sorted (content hash, caption) pairs.

        Renaming files keeps it; changing, adding or removing a photo or a caption changes it.
        """
        entries = sorted(
            ([image.sha256, image.caption] for image in self.accepted),
            key=lambda entry: (entry[0], entry[1] or "", entry[1] is None),
        )
        payload = json.dumps([FINGERPRINT_VERSION, entries], separators=(",", ":"))
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------- names


def display_name(name: str) -> str:
    """``name`` as printable text: bytes that are not UTF-8 become ``\\xNN`` escapes."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def is_ignored_name(name: str) -> bool:
    """True for entries the pipeline never treats as photos or subjects.

    Hidden entries (including ``.DS_Store``, ``._*`` AppleDouble files and the ``.ready``
    marker), ``Thumbs.db``/``desktop.ini`` litter and ``subject.toml``.
    """
    lowered = name.lower()
    return name.startswith(".") or lowered in LITTER_NAMES or lowered == SUBJECT_FILE


# ----------------------------------------------------------------------------- the folder


@dataclass
class _Listing:
    candidates: list[Candidate] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sidecars: dict[str, Path] = field(default_factory=dict)  # stem -> caption file
    ignored: list[str] = field(default_factory=list)  # display names


def _nested_folder_warning(subject: str, name: str) -> str:
    return (
        f"{name}/ is a folder inside {subject}/ and is ignored: only photos directly in "
        f"{subject}/ are used; move them up if they belong to this subject"
    )


def _add_link(
    listing: _Listing, subject: str, entry: os.DirEntry[str], root: Path, folder: Path
) -> None:
    name = display_name(entry.name)
    target = Path(os.path.realpath(entry.path))
    if not target.is_relative_to(root):
        listing.rejected.append(
            Rejection(
                name,
                f"{name} is a link that points outside the inbox: copy the photo itself "
                "into the folder",
            )
        )
    elif not target.exists():
        listing.rejected.append(
            Rejection(name, f"{name} is a broken link: copy the photo itself into the folder")
        )
    elif target.is_dir():
        listing.warnings.append(_nested_folder_warning(subject, name))
    elif target.parent == folder:
        sibling = display_name(target.name)
        listing.rejected.append(
            Rejection(
                name,
                f"{name} is a link to {sibling} in the same folder: {sibling} is used once; "
                "delete the link",
            )
        )
    elif entry.name.lower().endswith(CAPTION_SUFFIX):
        listing.sidecars[Path(entry.name).stem] = target
    else:
        listing.candidates.append(Candidate(name, entry.name, target))


class _TooManyEntries(Exception):
    pass


def _list_folder(folder: Path, root: Path, subject: str) -> _Listing:
    listing = _Listing()
    with os.scandir(folder) as entries:
        listed = list(itertools.islice(entries, MAX_FOLDER_ENTRIES + 1))
    if len(listed) > MAX_FOLDER_ENTRIES:
        raise _TooManyEntries
    real_folder = Path(os.path.realpath(folder))
    for entry in sorted(listed, key=lambda entry: entry.name):
        name = display_name(entry.name)
        if is_ignored_name(entry.name):
            if not entry.name.startswith(".") and entry.name.lower() != SUBJECT_FILE:
                listing.ignored.append(f"{name} (a file the system leaves behind)")
            continue
        if entry.is_symlink():
            _add_link(listing, subject, entry, root, real_folder)
        elif entry.is_dir(follow_symlinks=False):
            listing.warnings.append(_nested_folder_warning(subject, name))
        elif entry.name.lower().endswith(CAPTION_SUFFIX):
            listing.sidecars[Path(entry.name).stem] = Path(entry.path)
        else:
            listing.candidates.append(Candidate(name, entry.name, Path(entry.path)))
    stems = {Path(candidate.real_name).stem for candidate in listing.candidates}
    for stem, sidecar in sorted(listing.sidecars.items()):
        if stem not in stems:
            listing.ignored.append(
                f"{display_name(sidecar.name)} (text, and no photo is named {display_name(stem)}"
                " for it to caption)"
            )
    return listing


def _read_sidecar(name: str, sidecar: Path, root: Path) -> str | Rejection:
    file = display_name(sidecar.name)
    try:
        return read_beneath(root, sidecar, limit=MAX_CAPTION_BYTES).decode("utf-8")
    except RefusedFile as exc:
        return Rejection(
            name,
            f"{name}: its caption file {file} {exc.problem}: replace it with a plain text "
            f"file (at most {size_text(MAX_CAPTION_BYTES)}), or delete it",
        )
    except (OSError, UnicodeDecodeError) as exc:
        why = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else exc.strerror or exc
        return Rejection(
            name, f"{name}: its caption file {file} cannot be read ({why}): fix or delete it"
        )


def _caption_for(
    candidate: Candidate,
    captions: Mapping[str, str] | None,
    sidecars: Mapping[str, Path],
    root: Path,
) -> str | Rejection | None:
    name = candidate.name
    if captions is not None and name in captions:
        text: str | Rejection = captions[name]
    elif (sidecar := sidecars.get(Path(candidate.real_name).stem)) is not None:
        text = _read_sidecar(name, sidecar, root)
    else:
        return None
    if isinstance(text, Rejection):
        return text
    text = text.strip()
    if len(text) > MAX_TEXT_LENGTH:
        return Rejection(
            name,
            f"{name} has a caption of {len(text)} characters, over the {MAX_TEXT_LENGTH} "
            "allowed: shorten it",
        )
    return text or None


def _list_names(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED_NAMES])
    extra = len(names) - MAX_LISTED_NAMES
    return f"{shown} and {extra} more" if extra > 0 else shown


def _subject_error(
    subject: str,
    kind: Kind,
    accepted: list[ImageFile],
    rejected: list[Rejection],
    max_images: int,
) -> str | None:
    count = len(accepted)
    if count == 0 and not rejected:
        return f"no photos in {subject}/: add png, jpeg or webp photos to it"
    if count == 0:
        return (
            f"no usable photo in {subject}/: all {len(rejected)} files were rejected "
            "(see the reasons for each)"
        )
    if count > max_images:
        return (
            f"{count} images, at most {max_images} per training: move {count - max_images} "
            "out into another folder, or split the subject"
        )
    if kind == "style":
        missing = [image.name for image in accepted if image.caption is None]
        if missing:
            return (
                f"style training needs a caption for every image; missing for "
                f"{_list_names(missing)}: add them to subject.toml or as <name>.txt "
                "next to each image"
            )
    return None


def _unused_caption_warnings(captions: Mapping[str, str] | None, listing: _Listing) -> list[str]:
    if not captions:
        return []
    present = {candidate.name for candidate in listing.candidates}
    present.update(rejection.name for rejection in listing.rejected)
    return [
        f"a caption is given for {key!r}, which is not a photo in this folder: check the name"
        for key in sorted(captions)
        if key not in present
    ]


@dataclass
class _Sorted:
    """The folder's photos sorted into what is used and what is not."""

    accepted: list[tuple[ImageFile, PhotoAnalysis]] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    verdicts: dict[str, PhotoVerdict] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def refuse(self, rejection: Rejection, analysis: PhotoAnalysis | None = None) -> None:
        self.rejected.append(rejection)
        self.verdicts[rejection.name] = _verdict_of(rejection.name, analysis, rejection.reason)


def _verdict_of(name: str, analysis: PhotoAnalysis | None, refusal: str | None) -> PhotoVerdict:
    if analysis is None:
        return PhotoVerdict(name, "refused", None, None, (), (refusal or "",))
    reasons = (refusal,) if refusal is not None else analysis.refusals + analysis.warnings
    verdict: Verdict = "refused" if refusal is not None else analysis.verdict
    return PhotoVerdict(name, verdict, analysis.face_count, analysis.sharpness,
                        analysis.changes, reasons)


def _accept(
    listing: _Listing,
    captions: Mapping[str, str] | None,
    gate: Gate,
    root: Path,
    stop: threading.Event | None,
) -> _Sorted:
    found = _Sorted()
    for rejection in listing.rejected:
        found.refuse(rejection)
    first_by_hash: dict[str, str] = {}
    inspected = inspect_all(listing.candidates, gate, stop)
    for candidate, content in zip(listing.candidates, inspected, strict=True):
        if isinstance(content, Rejection):
            found.refuse(content)
            continue
        name = candidate.name
        analysis = judge_photo(content.measures, name, gate.settings, faces_required=gate.faces)
        thumbnail = content.measures.thumbnail
        caption = _caption_for(candidate, captions, listing.sidecars, root)
        if isinstance(caption, Rejection):
            found.refuse(replace(caption, thumbnail=thumbnail), analysis)
            continue
        original = first_by_hash.setdefault(content.sha256, name)
        if original != name:
            reason = (f"{name} is an exact copy of {original}: only {original} is used; "
                      "delete the copy")
            found.refuse(Rejection(name, reason, thumbnail=thumbnail), analysis)
            continue
        if analysis.refusals:
            reason = "; ".join(analysis.refusals)
            found.rejected.append(Rejection(name, reason, thumbnail=thumbnail))
            found.verdicts[name] = _verdict_of(name, analysis, None)
            continue
        measures = content.measures
        image = ImageFile(
            path=candidate.path, name=name, sha256=content.sha256,
            format=content.upload_format, width=measures.size[0], height=measures.size[1],
            size_bytes=content.size_bytes, caption=caption, faces=analysis.face_count,
            sharpness=measures.sharpness, changes=analysis.changes,
        )
        found.accepted.append((image, analysis))
        found.verdicts[name] = _verdict_of(name, analysis, None)
        found.warnings += analysis.warnings
    _leave_out_near_duplicates(found, gate.settings.near_duplicate_bits)
    return found


def _leave_out_near_duplicates(found: _Sorted, max_distance: int) -> None:
    hashed = [HashedPhoto(image.name, analysis.measures.phash, analysis.sharpness,
                          image.width * image.height, image.size_bytes,
                          lossless=image.format == "png")
              for image, analysis in found.accepted]
    twins = {d.name: d for d in find_near_duplicates(hashed, max_distance)}
    if not twins:
        return
    kept: list[tuple[ImageFile, PhotoAnalysis]] = []
    for image, analysis in found.accepted:
        twin = twins.get(image.name)
        if twin is None:
            kept.append((image, analysis))
            continue
        found.warnings = [w for w in found.warnings if w not in analysis.warnings]
        found.refuse(Rejection(image.name, twin.reason, thumbnail=analysis.measures.thumbnail),
                     analysis)
    found.accepted = kept


def _face_count_problem(
    subject: str, gate: Gate, accepted: list[tuple[ImageFile, PhotoAnalysis]]
) -> tuple[int | None, str | None]:
    """How many good face photos there are (None when faces are not looked for), and the
    sentence when they are too few."""
    if not gate.faces:
        return None, None
    good = sum(1 for _, analysis in accepted if analysis.good_face_photo)
    needed = gate.settings.min_face_photos
    if good >= needed:
        return good, None
    held = gate.settings.too_few_face_photos == "hold"
    return good, (
        f"only {good} good face photos in {subject}/ (one face, sharp, nothing refused), and "
        f"the service asks for at least {needed}: add clear photos of the face"
        + ("; held back until then (too_few_face_photos = \"hold\")" if held else "")
    )


def _failed(subject: str, folder: Path, error: str) -> DatasetReport:
    return DatasetReport(subject, folder, (), (), (), error)


def _outside_error(folder: Path) -> str:
    if os.path.islink(folder):
        return (
            f"{folder} is a link to a folder outside the inbox: move the photos into the "
            "inbox itself"
        )
    return f"{folder} is not inside the inbox: move it into the inbox"


def validate_subject(
    folder: Path,
    *,
    kind: Kind = "subject",
    class_word: str | None = None,
    captions: Mapping[str, str] | None = None,
    photos: PhotoSettings | None = None,
    cache: MeasureCache | None = None,
    max_pixels: int = 40_000_000,
    max_images: int = MAX_TRAINING_IMAGES,
    min_images_warning: int = RECOMMENDED_TRAINING_IMAGES,
    root: Path | None = None,
    stop: threading.Event | None = None,
) -> DatasetReport:
    """Check every file of one subject folder; never raises for a bad file or folder.

    ``captions`` maps file names to captions (from ``subject.toml``) and wins over a
    ``<stem>.txt`` sidecar. ``photos`` holds the photo gate's thresholds (and the training
    size); with its ``faces`` setting, ``kind`` and ``class_word`` decide whether each photo
    must show one face (:func:`~pipeline.inputs.photo_checks.faces_required`). ``cache``
    keeps what was measured by content hash. ``root`` is the inbox (default: the folder's
    parent): a symlink whose target leaves it is rejected without being read. ``max_pixels``
    rejects images whose header claims more pixels than that, before anything is decoded.
    A subject of fewer than ``min_images_warning`` usable images (the job's setting of that
    name) is accepted with a warning. Once ``stop`` is set, :class:`Stopped` is raised before
    the next file is read.

        >>> report = validate_subject(Path("inbox/alice"))
        >>> [r.reason for r in report.rejected_files]
        ['clip.jpg is a GIF image, not png/jpeg/webp (or HEIC/AVIF): convert it to PNG or
        JPEG, or remove it']
    """
    settings = photos or PhotoSettings()
    subject = display_name(folder.name)
    given_root = folder.parent if root is None else root
    root_path = Path(os.path.realpath(given_root))
    resolved = Path(os.path.realpath(folder))
    if not resolved.is_relative_to(root_path):
        return _failed(subject, folder, _outside_error(folder))
    try:
        listing = _list_folder(
            resolved if os.path.islink(folder) else folder, root_path, subject
        )
    except (FileNotFoundError, NotADirectoryError):
        return _failed(subject, folder, f"{folder} is not a folder (any more)")
    except _TooManyEntries:
        return _failed(
            subject,
            folder,
            f"{folder} holds more than {MAX_FOLDER_ENTRIES:,} entries, and a subject is at "
            f"most {max_images} photos: move what is not photos of {subject} out of it",
        )
    except OSError as exc:
        return _failed(
            subject, folder, f"{folder} cannot be listed ({exc.strerror or exc}): make it readable"
        )
    gate = Gate(settings, faces_required(settings.faces, kind, class_word), cache, max_pixels,
                root=given_root)
    found = _accept(listing, captions, gate, given_root, stop)
    accepted = [image for image, _ in found.accepted]
    warnings = listing.warnings + found.warnings
    warnings += _unused_caption_warnings(captions, listing)
    error = _subject_error(subject, kind, accepted, found.rejected, max_images)
    good_faces, face_problem = _face_count_problem(subject, gate, found.accepted)
    if error is None and len(accepted) < min_images_warning:
        warnings.append(
            f"only {len(accepted)} usable images in {subject}/: at least "
            f"{min_images_warning} are recommended for a good result; add photos, or lower "
            "min_images_warning in the job file"
        )
    if error is None and face_problem is not None:
        if settings.too_few_face_photos == "hold":
            error = face_problem
        else:
            warnings.append(face_problem)
    found.rejected.sort(key=lambda rejection: rejection.name)
    return DatasetReport(
        subject=subject,
        folder=folder,
        accepted=tuple(accepted),
        rejected_files=tuple(found.rejected),
        warnings=tuple(warnings),
        error=error,
        photos=tuple(found.verdicts[name] for name in sorted(found.verdicts)),
        ignored=tuple(listing.ignored),
        good_face_photos=good_faces,
        face_photos_needed=settings.min_face_photos if gate.faces else 0,
    )
