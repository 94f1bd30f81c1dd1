"""Judging an img2img init image by its content: what the service takes, and nothing else."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pipeline.inputs.init_images import InitImageRefused, judge_init_image, read_job_image
from tests.pictures import picture_bytes


@pytest.mark.parametrize(("fmt", "name"), [("PNG", "png"), ("JPEG", "jpeg"), ("WEBP", "webp")])
def test_png_jpeg_and_webp_are_taken_whatever_their_name(fmt: str, name: str) -> None:
    data = picture_bytes(fmt, (80, 60))
    image = judge_init_image(Path("pose.gif"), data)  # the name says nothing; the bytes do
    assert (image.format, image.size) == (name, (80, 60))
    assert image.sha256 == hashlib.sha256(data).hexdigest() and image.data == data


def test_heic_is_refused_with_what_to_do() -> None:
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\0" * 64
    with pytest.raises(InitImageRefused, match="is a HEIC/HEIF image, not png/jpeg/webp"):
        judge_init_image(Path("refs/pose.heic"), heic)


def test_a_picture_whose_pixels_are_cut_short_is_refused() -> None:
    data = picture_bytes("PNG", (200, 200), seed=3)
    with pytest.raises(InitImageRefused, match=r"refs/pose.png is a damaged PNG file \("):
        judge_init_image(Path("refs/pose.png"), data[: len(data) - 200])


def test_a_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "refs").mkdir()
    with pytest.raises(InitImageRefused, match="is not a regular file"):
        read_job_image(tmp_path / "refs", inbox=tmp_path / "inbox")
