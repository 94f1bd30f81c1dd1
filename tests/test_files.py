"""Whole files or nothing: the one temp-file-then-rename writer and what is built on it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.files import (
    PART_SUFFIX,
    part_path,
    remove_partials,
    write_atomic,
    write_json_atomic,
)


def test_write_atomic_takes_bytes_or_chunks_and_makes_the_folder(tmp_path: Path) -> None:
    target = tmp_path / "new" / "file.bin"
    write_atomic(target, b"one")
    assert target.read_bytes() == b"one"
    write_atomic(target, iter([b"two", b"", b" three"]))
    assert target.read_bytes() == b"two three"
    assert list(target.parent.iterdir()) == [target]


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    target.write_bytes(b"old")

    def chunks() -> Iterator[bytes]:
        yield b"half of the new "
        raise RuntimeError("the renderer broke")

    with pytest.raises(RuntimeError, match="renderer"):
        write_atomic(target, chunks())
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]


def test_temp_names_are_unique_hidden_and_swept_by_remove_partials(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.json"
    first, second = part_path(target), part_path(target)
    assert first != second and first.parent == target.parent
    assert first.name.startswith(".a.json.") and first.name.endswith(PART_SUFFIX)
    first.parent.mkdir()
    first.write_bytes(b"left by a crash")
    assert remove_partials(tmp_path) == 1 and not first.exists()


def test_write_json_atomic_writes_sorted_indented_utf8(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    write_json_atomic(target, {"b": 1, "a": "é"})
    text = target.read_text(encoding="utf-8")
    assert text == '{\n  "a": "é",\n  "b": 1\n}\n'
    assert json.loads(text) == {"a": "é", "b": 1}
