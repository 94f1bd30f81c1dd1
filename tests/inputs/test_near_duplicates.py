"""Near-duplicates: re-saves, small crops and burst shots are grouped; different photos are not."""

from __future__ import annotations

import io

from PIL import Image

from pipeline.inputs.near_duplicates import HashedPhoto, find_near_duplicates
from pipeline.inputs.photo_checks import PhotoSettings, analyse_photo
from tests.inputs import photos


def hashed(name: str, data: bytes) -> HashedPhoto:
    result = analyse_photo(io.BytesIO(data), name, PhotoSettings(), faces_required=False)
    width, height = result.size
    return HashedPhoto(name, result.measures.phash, result.sharpness, width * height, len(data))


def test_re_save_crop_and_burst_shot_are_named_with_the_best_copy_as_twin() -> None:
    original = photos.astronaut()
    subject = [
        hashed("1.jpg", photos.jpeg(original, quality=95)),
        hashed("2.jpg", photos.jpeg(original, quality=70)),
        hashed("3.jpg", photos.jpeg(original.crop((4, 4, 512, 512)))),
        hashed("4.jpg", photos.jpeg(original.rotate(1, resample=Image.Resampling.BICUBIC))),
        hashed("cat.jpg", photos.jpeg(photos.chelsea())),
        hashed("cup.jpg", photos.jpeg(photos.coffee())),
        hashed("camera.jpg", photos.jpeg(photos.camera())),
        hashed("mirror.jpg", photos.jpeg(original.transpose(Image.Transpose.FLIP_LEFT_RIGHT))),
    ]
    found = find_near_duplicates(subject)
    kept = "1.jpg"  # full size and the least compressed
    assert sorted(d.name for d in found) == sorted({"1.jpg", "2.jpg", "3.jpg", "4.jpg"} - {kept})
    assert {d.twin for d in found} == {kept}
    assert all(d.distance <= 10 for d in found)
    assert found[0].reason.startswith(f"{found[0].name} is a near-duplicate of {kept}")


def test_a_rotated_copy_is_found_as_a_duplicate_of_the_upright_one() -> None:
    portrait = photos.astronaut().crop((64, 0, 448, 512))
    subject = [hashed("a.jpg", photos.jpeg(portrait)),
               hashed("b.jpg", photos.sideways_jpeg(portrait))]
    assert [(d.name, d.twin) for d in find_near_duplicates(subject)] in (
        [("a.jpg", "b.jpg")], [("b.jpg", "a.jpg")])


def test_the_distance_is_a_setting_and_the_sharper_one_is_kept_when_alike() -> None:
    a = HashedPhoto("a.jpg", "ffffffffffffffff", 100.0, 1000, 500)
    b = HashedPhoto("b.jpg", "fffffffffffffff0", 300.0, 1000, 500)  # 4 bits away
    assert [(d.name, d.twin, d.distance) for d in find_near_duplicates([a, b])] == [
        ("a.jpg", "b.jpg", 4)]
    assert find_near_duplicates([a, b], max_distance=3) == []


def test_the_larger_picture_then_the_larger_file_is_kept_before_the_sharper() -> None:
    small = HashedPhoto("small.jpg", "ffffffffffffffff", 900.0, 800, 900)
    large = HashedPhoto("large.jpg", "ffffffffffffffff", 100.0, 1000, 100)
    assert [(d.name, d.twin) for d in find_near_duplicates([small, large])] == [
        ("small.jpg", "large.jpg")]
    resaved = HashedPhoto("resaved.jpg", "ffffffffffffffff", 900.0, 1000, 400)
    original = HashedPhoto("original.jpg", "ffffffffffffffff", 500.0, 1000, 700)
    assert [(d.name, d.twin) for d in find_near_duplicates([resaved, original])] == [
        ("resaved.jpg", "original.jpg")]
    drawing = HashedPhoto("drawing.png", "ffffffffffffffff", 100.0, 1000, 50, lossless=True)
    assert [(d.name, d.twin) for d in find_near_duplicates([resaved, drawing])] == [
        ("resaved.jpg", "drawing.png")]  # a PNG loses nothing, however small it is


def _hash_with_bits(bits: int) -> str:
    """A hash whose first ``bits`` bits are cleared: two of them differ by the difference."""
    return f"{(1 << 64) - 1 >> bits << bits:016x}"


def test_a_chain_of_near_duplicates_keeps_its_ends_when_they_differ() -> None:
    """A slow turn shot in a burst: each photo 6 bits from the next, the first and the
    last 12 bits apart. Grouping by chains left one photo of the whole turn, and named the
    last "a near-duplicate" of the first at 12 bits, over the 10 allowed."""
    a, b, c = (HashedPhoto(f"{name}.jpg", _hash_with_bits(bits), 100.0, 1000, size)
               for name, bits, size in (("a", 0, 900), ("b", 6, 800), ("c", 12, 700)))
    found = find_near_duplicates([a, b, c])
    assert [(d.name, d.twin, d.distance) for d in found] == [("b.jpg", "a.jpg", 6)]
    assert all(d.distance <= 10 for d in find_near_duplicates([c, b, a]))


def test_a_long_burst_keeps_one_photo_in_each_stretch_of_the_turn() -> None:
    burst = [HashedPhoto(f"{i:02}.jpg", _hash_with_bits(i), 100.0, 1000, 1000 - i)
             for i in range(50)]
    found = find_near_duplicates(burst)
    kept = sorted({photo.name for photo in burst} - {d.name for d in found})
    assert kept == ["00.jpg", "11.jpg", "22.jpg", "33.jpg", "44.jpg"]
    assert all(d.distance <= 10 for d in found)


def test_fifty_copies_of_one_picture_keep_one() -> None:
    copies = [HashedPhoto(f"{i:02}.jpg", "ffffffffffffffff", 100.0, 1000, 1000 + i)
              for i in range(50)]
    found = find_near_duplicates(copies)
    assert len(found) == 49 and {d.twin for d in found} == {"49.jpg"}
