"""The photo gate's per-photo analysis, on real photographs (scikit-image's)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from pipeline.inputs.photo_checks import (
    PhotoAnalysis,
    PhotoMeasures,
    PhotoSettings,
    analyse_photo,
    faces_required,
)
from tests.inputs import photos


def analyse(data: bytes, settings: PhotoSettings | None = None, *, faces: bool = True,
            name: str = "p.jpg") -> PhotoAnalysis:
    return analyse_photo(io.BytesIO(data), name, settings or PhotoSettings(), faces_required=faces)


def test_a_sharp_portrait_passes_with_its_one_face_in_the_middle() -> None:
    result = analyse(photos.jpeg(photos.astronaut()))
    assert result.verdict == "ok", result.warnings + result.refusals
    assert result.face_count == 1
    assert result.good_face_photo
    face = result.faces[0] if result.faces else None
    assert face is not None and 150 < face.x + face.width / 2 < 300 and face.y < 200
    assert result.sharpness > 300
    assert result.size == (512, 512)


def test_a_cat_has_no_face_and_is_refused_for_a_person() -> None:
    result = analyse(photos.jpeg(photos.chelsea()), name="cat.jpg")
    assert result.face_count == 0
    assert result.verdict == "refused"
    assert result.refusals[0].startswith("cat.jpg: no face found")
    assert 'faces = "off"' in result.refusals[0]


def test_faces_are_not_looked_for_when_not_required() -> None:
    result = analyse(photos.jpeg(photos.coffee()), PhotoSettings(training_size=(400, 400)),
                     faces=False, name="cup.jpg")
    assert result.faces is None and result.face_count is None
    assert result.verdict == "ok", result.warnings + result.refusals


def test_a_small_turned_face_is_not_a_face_photo() -> None:
    result = analyse(photos.jpeg(photos.camera()), name="camera.jpg")
    assert result.face_count == 0
    assert not result.good_face_photo
    assert result.verdict == "refused"


def test_two_people_side_by_side_are_refused() -> None:
    pair = photos.side_by_side(photos.astronaut(), photos.astronaut().rotate(3))
    result = analyse(photos.jpeg(pair), name="pair.jpg")
    assert result.face_count == 2
    assert any("2 faces found" in reason for reason in result.refusals)


def test_a_blurred_portrait_is_refused_as_blurry_measured_on_the_face() -> None:
    sharp = analyse(photos.jpeg(photos.astronaut()))
    result = analyse(photos.jpeg(photos.blurred(photos.astronaut(), 3)), name="blur.jpg")
    assert result.face_count == 1
    assert result.sharpness < PhotoSettings().min_sharpness < sharp.sharpness
    assert any(r.startswith("blur.jpg is blurry") and "on the face" in r for r in result.refusals)


def test_a_slightly_soft_portrait_is_only_warned_about() -> None:
    result = analyse(photos.jpeg(photos.blurred(photos.astronaut(), 1.2)), name="soft.jpg")
    assert result.verdict == "warning", result.refusals
    assert any("a little soft" in warning for warning in result.warnings)


def test_the_sharpness_threshold_is_a_setting() -> None:
    strict = PhotoSettings(min_sharpness=5000, soft_sharpness=6000)
    assert analyse(photos.jpeg(photos.astronaut()), strict).verdict == "refused"


def test_a_dark_photo_and_a_bright_photo_are_warned_about() -> None:
    dark = photos.astronaut().point(lambda v: v // 6)
    bright = photos.astronaut().point(lambda v: 235 + v // 13)
    settings = PhotoSettings(min_sharpness=0, soft_sharpness=0)
    assert any("very dark" in w for w in analyse(photos.jpeg(dark), settings, faces=False).warnings)
    assert any("very bright" in w for w in analyse(photos.jpeg(bright), settings, faces=False).warnings)
    assert analyse(photos.jpeg(photos.astronaut()), settings).warnings == ()


def test_a_face_small_and_off_centre_is_warned_about() -> None:
    canvas = photos.coffee().resize((1600, 1200))
    canvas.paste(photos.astronaut(), (40, 650))
    result = analyse(photos.jpeg(canvas), name="far.jpg")
    assert result.face_count == 1
    assert any("the face is small" in w for w in result.warnings)
    assert any("far from the centre" in w for w in result.warnings)
    assert result.verdict == "warning"


def test_a_photo_smaller_than_the_training_size_is_warned_about() -> None:
    result = analyse(photos.jpeg(photos.astronaut()), PhotoSettings(training_size=(768, 768)))
    assert any("smaller than the 768x768 training size" in w for w in result.warnings)


def test_exif_orientation_is_applied_and_the_shown_size_reported() -> None:
    portrait = photos.astronaut().crop((64, 0, 448, 512))  # 384 wide, 512 high
    result = analyse(photos.sideways_jpeg(portrait), name="phone.jpg")
    assert result.measures.stored_size == (512, 384)
    assert result.size == (384, 512)
    assert result.measures.orientation == 6
    assert result.face_count == 1  # found only once the picture is upright
    assert result.measures.conversions == ("rotated upright (EXIF orientation 6)",)
    assert result.measures.has_metadata
    assert result.changes == ("rotated upright (EXIF orientation 6)", "metadata removed")
    # Turned upright on the upload: nothing for the user to do (only its size is small).
    assert result.refusals == ()
    assert not any("EXIF" in warning or "sideways" in warning for warning in result.warnings)
    kept = analyse(photos.sideways_jpeg(portrait), PhotoSettings(keep_metadata=True))
    assert kept.changes == ("rotated upright (EXIF orientation 6)",)


def test_a_large_jpeg_is_analysed_reduced_with_its_face_box_in_full_size_pixels() -> None:
    big = photos.upscaled(photos.astronaut(), (3000, 3000))
    result = analyse(photos.jpeg(big))
    assert result.size == (3000, 3000)
    assert result.face_count == 1
    face = result.faces[0] if result.faces else None
    assert face is not None and 900 < face.x < 1300 and 400 < face.width < 700


def test_an_animated_webp_is_refused_or_its_first_frame_used() -> None:
    data = photos.animated_webp(photos.astronaut())
    refused = analyse(data, name="anim.webp")
    assert refused.measures.frames == 2
    assert any(r.startswith("anim.webp is animated (2 frames)") for r in refused.refusals)
    first = analyse(data, PhotoSettings(animated="first_frame"), name="anim.webp")
    assert first.refusals == ()
    assert any("only its first frame is used" in w for w in first.warnings)


@pytest.mark.parametrize(
    ("data", "change"),
    [
        (photos.cmyk_jpeg(photos.astronaut()), "CMYK colours to RGB"),
        (photos.png16(photos.astronaut()), "16 bits per channel to 8"),
        (photos.palette_png(photos.astronaut()), "palette colours to RGB"),
    ],
    ids=["cmyk", "16-bit", "palette"],
)
def test_photos_the_service_cannot_take_as_they_are_are_converted(data: bytes, change: str) -> None:
    result = analyse(data, name="odd")
    assert result.measures.conversions == (change,)
    assert result.face_count == 1
    assert result.verdict == "ok", result.refusals + result.warnings
    assert result.changes == (change, "metadata removed")
    kept = analyse(data, PhotoSettings(keep_metadata=True), name="odd")
    assert kept.changes == (change,)


def test_a_heic_photo_is_decoded_and_flagged_for_conversion() -> None:
    result = analyse(photos.encode(photos.astronaut(), "HEIF", quality=90), name="a.heic")
    assert result.measures.format == "heif"
    assert result.face_count == 1
    assert result.changes == ("HEIC to jpeg", "metadata removed")


def test_a_photo_that_needs_no_change_is_sent_as_it_is_and_metadata_is_noticed() -> None:
    plain = analyse(photos.jpeg(photos.astronaut()))
    assert plain.changes == ()
    exif = Image.Exif()
    exif[0x8825] = {2: (48.0, 51.0, 30.0)}  # GPS
    tagged = analyse(photos.jpeg(photos.astronaut(), exif=exif.tobytes()))
    assert tagged.changes == ("metadata removed",)
    assert analyse(photos.jpeg(photos.astronaut(), exif=exif.tobytes()),
                   PhotoSettings(keep_metadata=True)).changes == ()


def test_measures_survive_the_cache_round_trip() -> None:
    measures = analyse(photos.sideways_jpeg(photos.astronaut())).measures
    assert PhotoMeasures.from_json(measures.to_json()) == measures


def test_a_damaged_photo_raises_for_the_caller_to_word() -> None:
    data = photos.jpeg(photos.astronaut())
    with pytest.raises((OSError, SyntaxError, ValueError)):
        analyse(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("setting", "kind", "word", "expected"),
    [
        ("auto", "subject", "person", True),
        ("auto", "subject", "young Woman", True),
        ("auto", "subject", "dog", False),
        ("auto", "subject", "illustration", False),
        ("auto", "style", "person", False),
        ("auto", "subject", None, False),
        ("require", "subject", "dog", True),
        ("off", "subject", "person", False),
    ],
)
def test_faces_are_required_for_person_like_class_words(setting: str, kind: str, word: str | None,
                                                        expected: bool) -> None:
    assert faces_required(setting, kind, word) is expected  # type: ignore[arg-type]


def test_a_box_without_an_eye_is_not_a_face() -> None:
    sideways_cat = photos.chelsea().rotate(90, expand=True)  # the face cascade sees a face
    result = analyse(photos.jpeg(sideways_cat), name="cat.jpg")
    assert result.face_count == 0
    assert result.refusals[0].startswith("cat.jpg: no face found")
