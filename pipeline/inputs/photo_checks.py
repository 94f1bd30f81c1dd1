"""Judging one photo the way the service and its users do, before any money is spent.

The service's guide asks for png, jpeg or webp, "portrait in the center, no watermark, clear
picture", and "at least 10 photos of faces that meet the requirements". Two steps:

- :func:`measure_photo` decodes a photo once, at reduced size where the format allows it
  (JPEG draft mode), with its EXIF orientation applied, and answers :class:`PhotoMeasures`,
  facts about the content alone: the size as shown, the faces (:mod:`pipeline.inputs.faces`),
  a sharpness score (variance of the Laplacian, on the face when there is one), the mean
  brightness, a perceptual hash for :mod:`pipeline.inputs.near_duplicates`, the conversions
  the service needs (rotation, CMYK, 16 bits, a palette, an animation, HEIC/AVIF) and a
  thumbnail. They are kept by content hash, so a photo is decoded once.
- :func:`judge_photo` words them under :class:`PhotoSettings`: refusals, warnings, and the
  changes the upload makes (:func:`pipeline.inputs.photo_formats.upload_bytes` makes them;
  a photo that needs no change keeps its exact bytes).

    >>> with open("alice/1.jpg", "rb") as fp:
    ...     analysis = analyse_photo(fp, "1.jpg", PhotoSettings(), faces_required=True)
    >>> analysis.verdict, analysis.face_count, round(analysis.sharpness)
    ('ok', 1, 412)

Thresholds are :class:`PhotoSettings` fields; the defaults pass realistic good photos (a
sharp portrait scores in the hundreds; a blur of two pixels falls under 20).
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
from dataclasses import dataclass
from typing import IO, Final, Literal

import cv2
import imagehash
import numpy as np
import numpy.typing as npt
from PIL import Image

from pipeline.inputs.faces import FaceBox, detect_faces
from pipeline.inputs.photo_formats import (
    METADATA_REMOVED,
    PhotoFormat,
    bit_depth,
    conversions_needed,
    frame_count,
    metadata_strippable,
    open_photo,
    orientation_of,
    photo_format,
    pillow_quiet,
    to_analysis_rgb,
)

__all__ = [
    "PERSON_WORDS",
    "RECOMMENDED_FACE_PHOTOS",
    "FacesSetting",
    "PhotoAnalysis",
    "PhotoMeasures",
    "PhotoSettings",
    "analyse_photo",
    "faces_required",
    "judge_photo",
    "measure_photo",
    "upload_changes",
]

FacesSetting = Literal["auto", "require", "off"]
AnimatedSetting = Literal["refuse", "first_frame"]
TooFewSetting = Literal["warn", "hold"]
Verdict = Literal["ok", "warning", "refused"]

#: The guide's "at least 10 photos of faces that meet the requirements".
RECOMMENDED_FACE_PHOTOS: Final = 10
#: The report's thumbnail of a photo: long side in pixels, and JPEG quality.
THUMBNAIL_SIDE: Final = 160
THUMBNAIL_QUALITY: Final = 70

#: Class words that name a person: with ``faces = "auto"`` their photos must show one face.
PERSON_WORDS: Final = frozenset(
    {
        "person", "man", "woman", "boy", "girl", "child", "kid", "baby", "toddler", "teen",
        "teenager", "human", "people", "guy", "lady", "gentleman", "adult", "face", "portrait",
        "actor", "actress", "model", "he", "she", "male", "female", "men", "women", "someone",
    }
)
#: The long side a photo is analysed at. Faces are looked for at :data:`DETECTION_SIDE`
#: (a portrait's face is large: 320 px find it at a third of the cost of 512), and again at
#: :data:`FINE_DETECTION_SIDE` when none is found there (a small or soft face).
ANALYSIS_SIDE: Final = 1024
DETECTION_SIDE: Final = 320
FINE_DETECTION_SIDE: Final = 512


@dataclass(frozen=True, slots=True)
class PhotoSettings:
    """The thresholds of the photo gate, with defaults that pass good photos.

    ``min_sharpness`` refuses, ``soft_sharpness`` warns (variance of the Laplacian at up to
    1024 px, on the face when there is one). ``dark``/``bright`` warn on the mean brightness
    (0-255). A face narrower than ``min_face_share`` of the picture's short side, or whose
    centre is further than ``max_centre_offset`` (a share of the width; 1.5 times that of the
    height, a face sits high in a portrait) from the centre, is warned about. Photos within
    ``near_duplicate_bits`` of each other's perceptual hash are one picture. Below
    ``min_face_photos`` good face photos a subject is warned about, or held back when
    ``too_few_face_photos = "hold"``.
    """

    faces: FacesSetting = "auto"
    min_sharpness: float = 35.0
    soft_sharpness: float = 80.0
    dark: float = 40.0
    bright: float = 215.0
    min_face_share: float = 0.12
    max_centre_offset: float = 0.25
    training_size: tuple[int, int] = (512, 512)
    animated: AnimatedSetting = "refuse"
    keep_metadata: bool = False
    near_duplicate_bits: int = 10
    min_face_photos: int = RECOMMENDED_FACE_PHOTOS
    too_few_face_photos: TooFewSetting = "warn"


def faces_required(setting: FacesSetting, kind: str, class_word: str | None) -> bool:
    """Whether photos must show one face: always with ``"require"``, never with ``"off"``,
    and with ``"auto"`` for a subject whose class word names a person (``"person"``,
    ``"woman"``...; the last word counts, so ``"young man"`` does too)."""
    if setting != "auto":
        return setting == "require"
    words = (class_word or "").lower().split()
    return kind == "subject" and bool(words) and words[-1] in PERSON_WORDS


@dataclass(frozen=True, slots=True)
class PhotoMeasures:
    """What decoding one photo measured: facts about its content alone, whatever the
    settings, so they are kept by content hash (:mod:`pipeline.inputs.photo_cache`) and
    judged again under other settings. Sizes are as shown (orientation applied); ``faces``
    is None when faces were not looked for, boxes in shown pixels. ``thumbnail`` is a small
    JPEG of the upright picture, for the report."""

    format: PhotoFormat
    stored_size: tuple[int, int]
    size: tuple[int, int]
    orientation: int
    mode: str
    bit_depth: int
    frames: int
    faces: tuple[FaceBox, ...] | None
    sharpness: float
    brightness: float
    phash: str
    has_metadata: bool
    conversions: tuple[str, ...]
    thumbnail: bytes

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["thumbnail"] = base64.b64encode(self.thumbnail).decode("ascii")
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> PhotoMeasures:
        """Raises ``ValueError``/``KeyError``/``TypeError`` for a text :meth:`to_json` did not
        write."""
        data = json.loads(text)
        faces = data["faces"]
        return cls(
            format=data["format"],
            stored_size=_pair(data["stored_size"]),
            size=_pair(data["size"]),
            orientation=int(data["orientation"]),
            mode=str(data["mode"]),
            bit_depth=int(data["bit_depth"]),
            frames=int(data["frames"]),
            faces=None if faces is None else tuple(FaceBox(**face) for face in faces),
            sharpness=float(data["sharpness"]),
            brightness=float(data["brightness"]),
            phash=str(data["phash"]),
            has_metadata=bool(data["has_metadata"]),
            conversions=tuple(str(change) for change in data["conversions"]),
            thumbnail=base64.b64decode(data["thumbnail"], validate=True),
        )


def _pair(value: list[int]) -> tuple[int, int]:
    first, second = value
    return int(first), int(second)


@dataclass(frozen=True, slots=True)
class PhotoAnalysis:
    """One photo judged: its measures, and the sentences (naming it) that refuse it or
    warn about it. ``changes`` is what the upload does to it (:func:`upload_changes`)."""

    name: str
    measures: PhotoMeasures
    changes: tuple[str, ...]
    refusals: tuple[str, ...]
    warnings: tuple[str, ...]

    @property
    def verdict(self) -> Verdict:
        """``"refused"``, ``"warning"`` or ``"ok"``."""
        if self.refusals:
            return "refused"
        return "warning" if self.warnings else "ok"

    @property
    def faces(self) -> tuple[FaceBox, ...] | None:
        return self.measures.faces

    @property
    def face_count(self) -> int | None:
        return None if self.measures.faces is None else len(self.measures.faces)

    @property
    def good_face_photo(self) -> bool:
        """One face found and nothing refused: what the guide's "at least 10" counts."""
        return self.face_count == 1 and not self.refusals

    @property
    def sharpness(self) -> float:
        return self.measures.sharpness

    @property
    def size(self) -> tuple[int, int]:
        return self.measures.size


def measure_photo(fp: IO[bytes], *, find_faces: bool) -> PhotoMeasures:
    """Decode ``fp`` once (reduced where possible) and measure it. Raises ``OSError``,
    ``ValueError``, ``SyntaxError`` (any Pillow error) for a file that does not decode: the
    caller words that as a damaged file."""
    fp.seek(0)
    depth = bit_depth(fp.read(32))
    fp.seek(0)
    image = open_photo(fp)
    try:
        fmt = photo_format(image)
        stored = image.size
        orientation = orientation_of(image)
        frames = frame_count(image)
        mode = image.mode
        rgb = to_analysis_rgb(image, orientation, ANALYSIS_SIDE)
        has_metadata = _has_metadata(fp, fmt, image)
    finally:
        image.close()
    shown = (stored[1], stored[0]) if orientation in (5, 6, 7, 8) else stored
    faces, sharpness, brightness = _measure(rgb, find_faces)
    # Pixel sizes in the analysis image map back to the shown size by this factor.
    factor = shown[0] / rgb.width
    return PhotoMeasures(
        format=fmt,
        stored_size=stored,
        size=shown,
        orientation=orientation,
        mode=mode,
        bit_depth=depth,
        frames=frames,
        faces=None if faces is None else tuple(box.scaled(factor) for box in faces),
        sharpness=sharpness,
        brightness=brightness,
        phash=str(imagehash.phash(rgb)),
        has_metadata=has_metadata,
        conversions=conversions_needed(fmt, mode, depth, orientation, frames),
        thumbnail=_thumbnail(rgb),
    )


def upload_changes(measures: PhotoMeasures, keep_metadata: bool) -> tuple[str, ...]:
    """What the upload does to the photo, in words: its conversions, then the metadata
    removed (always when it is re-encoded, unless kept). Empty: its exact bytes are sent."""
    strip = not keep_metadata and (measures.has_metadata or bool(measures.conversions))
    return measures.conversions + ((METADATA_REMOVED,) if strip else ())


def judge_photo(
    measures: PhotoMeasures, name: str, settings: PhotoSettings, *, faces_required: bool
) -> PhotoAnalysis:
    """``measures`` judged under ``settings``; ``name`` is used in the sentences."""
    refusals, warnings = _judge(name, settings, measures, faces_required)
    return PhotoAnalysis(
        name=name,
        measures=measures,
        changes=upload_changes(measures, settings.keep_metadata),
        refusals=tuple(refusals),
        warnings=tuple(warnings),
    )


def analyse_photo(
    fp: IO[bytes], name: str, settings: PhotoSettings, *, faces_required: bool
) -> PhotoAnalysis:
    """:func:`measure_photo` then :func:`judge_photo`."""
    measures = measure_photo(fp, find_faces=faces_required)
    return judge_photo(measures, name, settings, faces_required=faces_required)


def _has_metadata(fp: IO[bytes], fmt: str, image: Image.Image) -> bool:
    if fmt in ("png", "jpeg", "webp"):  # exactly when the upload would take something out
        fp.seek(0)
        return metadata_strippable(fp.read(), fmt)
    with pillow_quiet():
        return bool(image.getexif()) or any(image.info.get(key) for key in ("exif", "xmp"))


def _thumbnail(rgb: Image.Image) -> bytes:
    small = rgb.copy()
    small.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=THUMBNAIL_QUALITY)
    return buffer.getvalue()


def _faces_at(gray: npt.NDArray[np.uint8], side: int) -> tuple[FaceBox, ...]:
    """The faces found in ``gray`` reduced to ``side`` px on its long side, in its pixels."""
    height, width = gray.shape[:2]
    scale = min(1.0, side / max(width, height))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        gray = np.asarray(cv2.resize(gray, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
    return tuple(box.scaled(1 / scale) for box in detect_faces(gray))


def _measure(
    rgb: Image.Image, find_faces: bool
) -> tuple[tuple[FaceBox, ...] | None, float, float]:
    gray_full = np.asarray(rgb.convert("L"))
    faces: tuple[FaceBox, ...] | None = None
    region = gray_full
    if find_faces:
        faces = _faces_at(gray_full, DETECTION_SIDE)
        if not faces and max(gray_full.shape) > DETECTION_SIDE:
            faces = _faces_at(gray_full, FINE_DETECTION_SIDE)  # a small or soft face
        if len(faces) == 1:
            box = faces[0]
            region = gray_full[box.y : box.y + box.height, box.x : box.x + box.width]
    sharpness = float(cv2.Laplacian(region, cv2.CV_64F).var()) if region.size else 0.0
    return faces, sharpness, float(gray_full.mean())


def _judge(
    name: str, settings: PhotoSettings, measures: PhotoMeasures, faces_required: bool
) -> tuple[list[str], list[str]]:
    shown, faces = measures.size, measures.faces
    refusals: list[str] = []
    warnings: list[str] = []
    if faces_required and faces is not None:
        refusals += _face_refusals(name, faces)
        if len(faces) == 1:
            warnings += _face_warnings(name, faces[0], shown, settings)
    where = "on the face" if faces is not None and len(faces) == 1 else "over the picture"
    if measures.sharpness < settings.min_sharpness:
        refusals.append(
            f"{name} is blurry (sharpness {measures.sharpness:.0f} {where}, at least "
            f"{settings.min_sharpness:g} needed): use a sharp, clear photo instead"
        )
    elif measures.sharpness < settings.soft_sharpness:
        warnings.append(
            f"{name} is a little soft (sharpness {measures.sharpness:.0f} {where}, "
            f"{settings.soft_sharpness:g} or more is sharp): a sharper photo trains better"
        )
    if measures.brightness < settings.dark:
        warnings.append(
            f"{name} is very dark (mean brightness {measures.brightness:.0f} of 255): "
            "use a better lit photo"
        )
    elif measures.brightness > settings.bright:
        warnings.append(
            f"{name} is very bright (mean brightness {measures.brightness:.0f} of 255): "
            "it looks overexposed; use a photo with more detail in the light parts"
        )
    min_width, min_height = settings.training_size
    if shown[0] < min_width or shown[1] < min_height:
        warnings.append(
            f"{name} is {shown[0]}x{shown[1]}, smaller than the {min_width}x{min_height} "
            "training size: it will be upscaled and may look soft; use a larger photo if "
            "you have one"
        )
    _judge_animation(name, settings, measures, refusals, warnings)
    return refusals, warnings


def _face_refusals(name: str, faces: tuple[FaceBox, ...]) -> list[str]:
    if not faces:
        return [
            f"{name}: no face found: the photos of a person must show the face, clear and "
            "turned to the camera; replace it, or set faces = \"off\" for this subject"
        ]
    if len(faces) > 1:
        return [
            f"{name}: {len(faces)} faces found: the training learns one person, so use "
            "photos of them alone (crop the others out), or remove it"
        ]
    return []


def _face_warnings(
    name: str, face: FaceBox, shown: tuple[int, int], settings: PhotoSettings
) -> list[str]:
    warnings: list[str] = []
    share = face.width / min(shown)
    if share < settings.min_face_share:
        warnings.append(
            f"{name}: the face is small ({share:.0%} of the picture's short side): crop "
            "closer, the guide asks for the portrait in the centre"
        )
    centre_x = (face.x + face.width / 2) / shown[0] - 0.5
    centre_y = (face.y + face.height / 2) / shown[1] - 0.5
    if abs(centre_x) > settings.max_centre_offset or (
        abs(centre_y) > settings.max_centre_offset * 1.5
    ):
        warnings.append(
            f"{name}: the face is far from the centre: crop it so the portrait is in the "
            "centre, as the guide asks"
        )
    return warnings


def _judge_animation(
    name: str,
    settings: PhotoSettings,
    measures: PhotoMeasures,
    refusals: list[str],
    warnings: list[str],
) -> None:
    frames = measures.frames
    if frames > 1 and settings.animated == "refuse":
        refusals.append(
            f"{name} is animated ({frames} frames): export the frame you want as a still "
            "photo (png or jpeg), or remove it; animated = \"first_frame\" uses the first"
        )
    elif frames > 1:
        warnings.append(f"{name} is animated ({frames} frames): only its first frame is used")
