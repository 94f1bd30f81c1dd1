"""Judging one photo the way the service and its users do, before any money is spent.

The service's guide asks for png, jpeg or webp, "portrait in the center, no watermark, clear
picture", and "at least 10 photos of faces that meet the requirements". :func:`analyse_photo`
decodes a photo once, at reduced size where the format allows it (JPEG draft mode), with its
EXIF orientation applied, and answers a :class:`PhotoAnalysis`: the size as shown, the faces
(:mod:`pipeline.inputs.faces`), a sharpness score (variance of the Laplacian, on the face when
there is one), the mean brightness, a perceptual hash for
:mod:`pipeline.inputs.near_duplicates`, and sentences: refusals, warnings, and the conversions
the photo needs before the service can take it (rotation, CMYK, 16 bits, a palette, an
animation, HEIC/AVIF). :func:`pipeline.inputs.photo_formats.upload_bytes` produces those
converted bytes, with EXIF and GPS stripped unless ``keep_metadata``; a photo that needs no
change keeps its exact bytes.

    >>> with open("alice/1.jpg", "rb") as fp:
    ...     analysis = analyse_photo(fp, "1.jpg", PhotoSettings(), faces_required=True)
    >>> analysis.verdict, analysis.face_count, round(analysis.sharpness)
    ('ok', 1, 412)

Thresholds are :class:`PhotoSettings` fields; the defaults pass realistic good photos (a
sharp portrait scores in the hundreds; a blur of two pixels falls under 20).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, Final, Literal

import cv2
import imagehash
import numpy as np
from PIL import Image

from pipeline.inputs.faces import FaceBox, detect_faces
from pipeline.inputs.photo_formats import (
    PhotoFormat,
    bit_depth,
    conversions_needed,
    open_photo,
    orientation_of,
    to_analysis_rgb,
)

__all__ = [
    "PERSON_WORDS",
    "FacesSetting",
    "PhotoAnalysis",
    "PhotoSettings",
    "analyse_photo",
    "faces_required",
]

FacesSetting = Literal["auto", "require", "off"]
AnimatedSetting = Literal["refuse", "first_frame"]
Verdict = Literal["ok", "warning", "refused"]

#: Class words that name a person: with ``faces = "auto"`` their photos must show one face.
PERSON_WORDS: Final = frozenset(
    {
        "person", "man", "woman", "boy", "girl", "child", "kid", "baby", "toddler", "teen",
        "teenager", "human", "people", "guy", "lady", "gentleman", "adult", "face", "portrait",
        "actor", "actress", "model", "he", "she", "male", "female", "men", "women", "someone",
    }
)
#: The long side a photo is analysed at; detection runs at :data:`DETECTION_SIDE`.
ANALYSIS_SIDE: Final = 1024
DETECTION_SIDE: Final = 512


@dataclass(frozen=True, slots=True)
class PhotoSettings:
    """The thresholds of the photo gate, with defaults that pass good photos.

    ``min_sharpness`` refuses, ``soft_sharpness`` warns (variance of the Laplacian at up to
    1024 px, on the face when there is one). ``dark``/``bright`` warn on the mean brightness
    (0-255). A face narrower than ``min_face_share`` of the picture's short side, or whose
    centre is further than ``max_centre_offset`` (a share of the width; 1.5 times that of the
    height, a face sits high in a portrait) from the centre, is warned about.
    ``converts_on_upload`` says whether the upload sends :func:`upload_bytes`: without it, a
    photo that needs converting is refused with what to do, as its bytes would go as they are.
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
    converts_on_upload: bool = False


def faces_required(setting: FacesSetting, kind: str, class_word: str | None) -> bool:
    """Whether photos must show one face: always with ``"require"``, never with ``"off"``,
    and with ``"auto"`` for a subject whose class word names a person (``"person"``,
    ``"woman"``...; the last word counts, so ``"young man"`` does too)."""
    if setting != "auto":
        return setting == "require"
    words = (class_word or "").lower().split()
    return kind == "subject" and bool(words) and words[-1] in PERSON_WORDS


@dataclass(frozen=True, slots=True)
class PhotoAnalysis:
    """What :func:`analyse_photo` found in one photo. Sizes are as shown (orientation
    applied); ``faces`` is None when faces were not looked for, boxes in shown pixels."""

    name: str
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
    refusals: tuple[str, ...]
    warnings: tuple[str, ...]

    @property
    def verdict(self) -> Verdict:
        """``"refused"``, ``"warning"`` or ``"ok"``."""
        if self.refusals:
            return "refused"
        return "warning" if self.warnings else "ok"

    @property
    def face_count(self) -> int | None:
        return None if self.faces is None else len(self.faces)

    @property
    def good_face_photo(self) -> bool:
        """One face found and nothing refused: what the guide's "at least 10" counts."""
        return self.face_count == 1 and not self.refusals

    @property
    def hash(self) -> imagehash.ImageHash:
        return imagehash.hex_to_hash(self.phash)


@dataclass(frozen=True, slots=True)
class _Measures:
    faces: tuple[FaceBox, ...] | None
    sharpness: float
    brightness: float
    phash: str


def analyse_photo(
    fp: IO[bytes], name: str, settings: PhotoSettings, *, faces_required: bool
) -> PhotoAnalysis:
    """Decode ``fp`` once (reduced where possible) and judge it; ``name`` is used in the
    sentences. Raises ``OSError``/``ValueError`` (any Pillow error) for a file that does
    not decode: the caller words that as a damaged file."""
    fp.seek(0)
    depth = bit_depth(fp.read(32))
    fp.seek(0)
    image = open_photo(fp)
    try:
        fmt: PhotoFormat = image.format.lower() if image.format else "png"  # type: ignore[assignment]
        stored = image.size
        orientation = orientation_of(image)
        frames = getattr(image, "n_frames", 1)
        mode = image.mode
        has_metadata = _has_metadata(image)
        rgb = to_analysis_rgb(image, orientation, ANALYSIS_SIDE)
    finally:
        image.close()
    shown = (stored[1], stored[0]) if orientation in (5, 6, 7, 8) else stored
    measures = _measure(rgb, faces_required)
    # Pixel sizes in the analysis image map back to the shown size by this factor.
    factor = shown[0] / rgb.width
    faces = None if measures.faces is None else tuple(b.scaled(factor) for b in measures.faces)
    conversions = conversions_needed(fmt, mode, depth, orientation, frames)
    refusals, warnings = _judge(
        name, settings, shown, faces, measures, conversions, frames, faces_required
    )
    return PhotoAnalysis(
        name=name,
        format=fmt,
        stored_size=stored,
        size=shown,
        orientation=orientation,
        mode=mode,
        bit_depth=depth,
        frames=frames,
        faces=faces,
        sharpness=measures.sharpness,
        brightness=measures.brightness,
        phash=measures.phash,
        has_metadata=has_metadata,
        conversions=conversions,
        refusals=tuple(refusals),
        warnings=tuple(warnings),
    )


def _has_metadata(image: Image.Image) -> bool:
    info = image.info
    keys = {"exif", "xmp", "XML:com.adobe.xmp", "comment", "Raw profile type exif"}
    return any(info.get(key) for key in keys) or bool(image.getexif())


def _measure(rgb: Image.Image, faces_required: bool) -> _Measures:
    gray_full = np.asarray(rgb.convert("L"))
    faces: tuple[FaceBox, ...] | None = None
    region = gray_full
    if faces_required:
        scale = min(1.0, DETECTION_SIDE / max(rgb.size))
        small = gray_full
        if scale < 1.0:
            size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
            small = cv2.resize(gray_full, size, interpolation=cv2.INTER_AREA)
        faces = tuple(box.scaled(1 / scale) for box in detect_faces(small))
        if len(faces) == 1:
            box = faces[0]
            region = gray_full[box.y : box.y + box.height, box.x : box.x + box.width]
    sharpness = float(cv2.Laplacian(region, cv2.CV_64F).var()) if region.size else 0.0
    return _Measures(
        faces=faces,
        sharpness=sharpness,
        brightness=float(gray_full.mean()),
        phash=str(imagehash.phash(rgb)),
    )


def _judge(
    name: str,
    settings: PhotoSettings,
    shown: tuple[int, int],
    faces: tuple[FaceBox, ...] | None,
    measures: _Measures,
    conversions: tuple[str, ...],
    frames: int,
    faces_required: bool,
) -> tuple[list[str], list[str]]:
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
    _judge_conversions(name, settings, conversions, frames, refusals, warnings)
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


def _judge_conversions(
    name: str,
    settings: PhotoSettings,
    conversions: tuple[str, ...],
    frames: int,
    refusals: list[str],
    warnings: list[str],
) -> None:
    if frames > 1 and settings.animated == "refuse":
        refusals.append(
            f"{name} is animated ({frames} frames): export the frame you want as a still "
            "photo (png or jpeg), or remove it"
        )
    elif frames > 1:
        warnings.append(f"{name} is animated ({frames} frames): only its first frame is used")
    others = [change for change in conversions if not change.startswith("animated")]
    if not others:
        return
    listed = "; ".join(others)
    if settings.converts_on_upload:
        warnings.append(f"{name} is converted before the upload ({listed})")
    elif any(change.startswith("rotated") for change in others) and len(others) == 1:
        warnings.append(
            f"{name} is stored sideways with an EXIF orientation tag ({listed}): the service "
            "may see it unrotated; save it upright to be sure"
        )
    else:
        refusals.append(
            f"{name} needs converting before the service can take it ({listed}): save it as "
            "an 8-bit RGB jpeg or png"
        )

