"""Counting faces in a photo, on the CPU, with a model shipped inside a wheel.

The detector is OpenCV's frontal-face Haar cascade, the XML file that the
``opencv-python-headless`` 4.x wheels carry in ``cv2/data``: nothing is downloaded at run
time, and it needs no GPU. (The 5.x wheels no longer ship the cascades, hence the ``<5`` pin
in ``pyproject.toml``.) A cascade is not the most accurate detector there is, but it is the
one whose weights come with a wheel we already need; its few false alarms are small boxes,
so a box much smaller than the largest one found is not counted as a person.

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

__all__ = ["CASCADE_FILE", "FaceBox", "FaceDetectorMissing", "detect_faces"]

CASCADE_FILE: Final = "haarcascade_frontalface_default.xml"
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


def _cascade_path() -> Path:
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    path = Path(folder or "") / CASCADE_FILE
    if folder is None or not path.is_file():
        raise FaceDetectorMissing(
            f"OpenCV {cv2.__version__} has no {CASCADE_FILE}: install "
            "opencv-python-headless>=4.8,<5 (the 5.x wheels no longer ship it)"
        )
    return path


def _classifier() -> cv2.CascadeClassifier:
    classifier: cv2.CascadeClassifier | None = getattr(_local, "classifier", None)
    if classifier is None:
        classifier = cv2.CascadeClassifier(str(_cascade_path()))
        if classifier.empty():
            raise FaceDetectorMissing(f"OpenCV could not load {_cascade_path()}")
        _local.classifier = classifier
    return classifier


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
    if not boxes:
        return ()
    largest = boxes[0].width
    return tuple(box for box in boxes if box.width >= largest * MIN_SHARE_OF_LARGEST)
