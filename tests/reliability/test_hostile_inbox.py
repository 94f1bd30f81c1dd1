"""A hostile inbox, end to end: every bad file refused with a reason naming it, every good
subject done, and nothing outside the inbox, the outbox and the state read or written.

The pipeline runs as a real process (``python -m pipeline``'s ``main``) under an audit hook
(``sys.addaudithook``) that records every file it opens, lists, renames or removes; the
emulator runs in another process, so its own files stay out of the record.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from pipeline.cli.samples import create_samples
from pipeline.engine.outbox import SubjectOutbox
from pipeline.store.sqlite import SqliteStore
from pipeline.store.states import DONE, REJECTED
from pipeline.views.summary import EXIT_OK, EXIT_REJECTED
from tests.pictures import picture_bytes

from .conftest import record
from .harness import EmulatorProcess, clean_env

REPO = Path(__file__).resolve().parents[2]

#: Runs ``pipeline.cli.main`` under an audit hook that writes one JSON line per file event.
AUDITED_MAIN = r'''
import json, os, sys, threading

record, lock = open(sys.argv[1], "a", encoding="utf-8"), threading.Lock()
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
EVENTS = {"os.rename": "write", "os.replace": "write", "os.remove": "write",
          "os.unlink": "write", "os.mkdir": "write", "os.rmdir": "write", "os.chmod": "write",
          "os.symlink": "write", "os.truncate": "write", "os.utime": "write",
          "shutil.rmtree": "write", "shutil.copyfile": "write",
          "os.listdir": "read", "os.scandir": "read"}

def name(value):
    if isinstance(value, (str, bytes, os.PathLike)):
        return os.fsdecode(value)
    return None

simulating = threading.local()  # the test's own doings are not the pipeline's

def hook(event, args):
    if getattr(simulating, "on", False):
        return
    if event == "open":
        path, mode, flags = args
        kind = "write" if (mode and any(c in mode for c in "wax+")) or (
            flags and flags & WRITE_FLAGS) else "read"
        if kind == "read" and isinstance(path, str) and not os.path.isabs(path):
            return  # a name opened below a folder descriptor (dir_fd), itself audited
        paths = [name(path)]
    elif event == "sqlite3.connect":  # a path, or a file: URI (read-only with mode=ro)
        target = name(args[0]) or ""
        kind = "read" if target.startswith("file:") and "mode=ro" in target else "write"
        paths = [target.removeprefix("file:").split("?")[0]]
    elif event in EVENTS:
        kind, paths = EVENTS[event], [name(a) for a in args[:2]]
    else:
        return
    for path in paths:
        if path is not None and path != ":memory:":
            with lock:
                record.write(json.dumps([kind, event, os.path.abspath(path)]) + "\n")

sys.addaudithook(hook)

from pipeline.inputs import dataset, photo_files

if os.geteuid() == 0:  # root reads anything: refuse the way a chmod 000 file would be
    opener = photo_files._open_for_read
    def refuse(path):
        if path.name == "unreadable.png":
            raise PermissionError(13, "Permission denied", str(path))
        return opener(path)
    photo_files._open_for_read = refuse

if os.environ.get("HOSTILE_GROW"):  # a photo still being copied while it is checked
    reader, growing = photo_files._read_bounded, os.environ["HOSTILE_GROW"]
    def read_while_writing(fp):
        result = reader(fp)
        if os.fstat(fp.fileno()).st_ino == os.stat(growing).st_ino:
            simulating.on = True
            with open(growing, "ab") as out:
                out.write(b"more bytes arriving")
            simulating.on = False
        return result
    photo_files._read_bounded = read_while_writing

from pipeline.cli.commands import main
sys.exit(main(sys.argv[2:]))
'''


def picture(fmt: str = "PNG", seed: int = 0, size: tuple[int, int] = (128, 128)) -> bytes:
    """A sharp picture of its own per seed (:mod:`tests.pictures`): the photo gate passes the
    good ones, so every refusal below is for the hostile thing about a file."""
    return picture_bytes(fmt, size, seed)


def png_claiming(width: int, height: int) -> bytes:
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))


def corrupt_jpeg() -> bytes:
    data = bytearray(picture("JPEG", seed=8))
    at = data.index(b"\xff\xc4") + 5
    data[at:at + 20] = b"\xff" * 20  # Huffman table wiped
    return bytes(data)


#: file name -> (bytes, words the reason must contain): each a way a photo can be bad.
BAD_FILES: dict[str, tuple[bytes, str]] = {
    "corrupt.jpg": (corrupt_jpeg(), "damaged JPEG"),
    "truncated.png": (picture(seed=9)[:300], "damaged PNG"),
    "animation.jpg": (picture("GIF", seed=3), "GIF"),
    "bitmap.jpg": (picture("BMP", seed=3), "BMP"),
    "scan.jpg": (picture("TIFF", seed=3), "TIFF"),
    "IMG_0001.jpg": (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(40), "HEIC"),
    "empty.jpg": (b"", "empty (0 bytes)"),
    "panorama.png": (png_claiming(30_000, 20_000), "megapixel"),
    "unreadable.png": (picture(seed=10), "cannot be read (permission denied)"),
    "notes.png": (b"these are notes, not a photo\n", "text file"),
}
GOOD_ODD_NAMES = ["ünïcödé 照片.png", "with space.png", "-leading-dash.png",
                  os.fsdecode(b"odd\xfe\xff.png")]
ODD_SUBJECT = "-dash ünï cödé"
ODD_BYTES_SUBJECT = os.fsdecode(b"bytes \xff\xfe")
BAD_TOML = 'class_word = 42\nlora_strenght = 0.5\n[generation]\nlora_strength = 5\n'


def build_inbox(root: Path) -> dict[str, object]:
    """The hostile inbox; returns what the test needs to know about it."""
    inbox, outside = root / "inbox", root / "outside"
    create_samples(inbox, count=2, images_per_subject=3, include_bad=False)  # alice, bob
    outside.mkdir()
    secret = outside / "secret.png"
    secret.write_bytes(picture(seed=99))
    hostile = inbox / "hostile"
    hostile.mkdir()
    for index in range(3):
        (hostile / f"good_{index}.png").write_bytes(picture(seed=20 + index))
    for index, odd in enumerate(GOOD_ODD_NAMES):
        (hostile / odd).write_bytes(picture(seed=30 + index))
    for file, (data, _) in BAD_FILES.items():
        (hostile / file).write_bytes(data)
    (hostile / "unreadable.png").chmod(0)
    (hostile / "link_outside.png").symlink_to(secret)
    os.mkfifo(hostile / "pipe.png")
    (hostile / "nested").mkdir()
    (hostile / "nested" / "inner.png").write_bytes(picture(seed=40))
    too_many = inbox / "too_many"
    too_many.mkdir()
    for index in range(51):
        (too_many / f"frame_{index:02d}.png").write_bytes(picture(seed=100 + index, size=(32, 32)))
    bad_toml = inbox / "bad_toml"
    bad_toml.mkdir()
    (bad_toml / "subject.toml").write_text(BAD_TOML)
    (bad_toml / "a.png").write_bytes(picture(seed=50))
    only_bad = inbox / "only_bad"
    only_bad.mkdir()
    (only_bad / "empty.jpg").write_bytes(b"")
    (only_bad / "animation.jpg").write_bytes(picture("GIF", seed=4))
    odd_subject = inbox / ODD_SUBJECT
    odd_subject.mkdir()
    for index in range(2):
        (odd_subject / f"p{index}.png").write_bytes(picture(seed=60 + index))
    odd_bytes = inbox / ODD_BYTES_SUBJECT
    odd_bytes.mkdir()
    (odd_bytes / "subject.toml").write_text('[generation]\nextra_prompts = ["{subject} again"]\n')
    for index in range(2):
        (odd_bytes / f"b{index}.png").write_bytes(picture(seed=80 + index))
    growing = inbox / "growing"
    growing.mkdir()
    for index in range(2):
        (growing / f"g{index}.png").write_bytes(picture(seed=70 + index))
    return {"secret": secret, "grow": growing / "g1.png",
            "secret_atime": secret.stat().st_atime_ns}


def write_job(root: Path) -> Path:
    job = root / "hostile.toml"
    job.write_text("""
[job]
name = "hostile"
inbox = "inbox"
outbox = "outbox"
settle_seconds = 0

[training]
kind = "subject"

[generation]
width = 128
height = 128
prompts = ["{instance_prompt}, portrait"]

[photos]
faces = "off"  # tests.pictures are sharp and distinct, but no one's face
""")
    return job


def audited_run(root: Path, job: Path, audit: Path, *, grow: Path | None = None) -> tuple:
    script = audit.parent / "audited_main.py"
    script.write_text(AUDITED_MAIN)
    env = clean_env()
    if grow is not None:
        env["HOSTILE_GROW"] = str(grow)
    done = subprocess.run(
        [sys.executable, str(script), str(audit), "--config", str(root / "config.env"),
         "run", str(job), "--max-wait", "60"],
        cwd=root, env=env, capture_output=True, text=True, timeout=120,
    )
    return done.returncode, done.stdout, done.stderr


def allowed_reads(root: Path, script_dir: Path) -> tuple[str, ...]:
    """Where a run may read: its own files, and the Python runtime's."""
    runtime = {sys.prefix, sys.base_prefix, sys.exec_prefix, str(REPO / "pipeline"),
               str(REPO / "lora_pipeline.egg-info"),
               *(p for p in sys.path if p and "site-packages" in p)}
    system = ("/dev/", "/proc/", "/sys/", "/etc/", "/usr/lib/", "/usr/share/", "/usr/local/lib/",
              "/lib/", "/lib64/", "/usr/lib64/")
    work = (root / "inbox", root / "outbox", root / "state", root / "config.env",
            root / "hostile.toml")
    return (*(str(p) for p in work), *(os.path.realpath(p) for p in runtime), *system,
            str(script_dir))


def import_listing(event: list[str]) -> bool:
    """The import system lists the folders on sys.path (the script's, the repo)."""
    return event[1] == "os.listdir" and event[2] in (str(REPO), *map(str, sys.path))


@pytest.mark.timeout(180)
def test_a_hostile_inbox_is_refused_file_by_file(tmp_path) -> None:
    root = tmp_path / "work"
    root.mkdir()
    facts = build_inbox(root)
    job = write_job(root)
    (tmp_path / "audit").mkdir()
    audit = tmp_path / "audit" / "events.jsonl"
    emulator = EmulatorProcess(root, {"queue_seconds": 0.05, "train_seconds": 0.2,
                                      "deploy_seconds": 0.05, "generation_seconds": 0.05,
                                      "generation_queue_seconds": 0.02})
    try:
        (root / "config.env").write_text(
            f"LORA_API_KEY=sk-soak-harness-key\nLORA_BASE_URL={emulator.base_url}\n"
            f"LORA_STATE_DIR={root / 'state'}\nLORA_POLL_INTERVAL_MIN=0.02\n"
            "LORA_POLL_INTERVAL_MAX=0.05\nLORA_GENERATION_POLL_INTERVAL=0.02\n"
            "LORA_LOG_FORMAT=json\n")
        first = audited_run(root, job, audit, grow=facts["grow"])
        second = audited_run(root, job, audit)
        trainings = emulator.counters()["trainings_created"]["total"]
    finally:
        emulator.stop()
        (root / "inbox" / "hostile" / "unreadable.png").chmod(0o644)

    code, out, err = first
    assert code == EXIT_REJECTED, err[-3000:]
    assert second[0] in (EXIT_OK, EXIT_REJECTED), second[2][-3000:]
    assert "Traceback" not in err + second[2]

    with SqliteStore(root / "state" / "state.db") as store:
        assert store.integrity_problems() == []
        subjects = {s.name: s for s in store.subjects("hostile")}
        hostile = subjects["hostile"]
        refused = {r.name: r.reason for r in store.rejections(hostile.id)}
        accepted = {i.name for i in store.images(hostile.id)}

    # Every bad file is refused with a sentence that names it and says what is wrong.
    expected_refusals = {**{f: words for f, (_, words) in BAD_FILES.items()},
                         "link_outside.png": "points outside the inbox",
                         "pipe.png": "not a regular file"}
    assert set(refused) == set(expected_refusals)
    for file, words in expected_refusals.items():
        assert refused[file].startswith(file) and words in refused[file], refused[file]
        assert file in out  # and the user was told, in the run's own output
    assert any("nested/" in w and "ignored" in w for w in hostile.warning_list)
    # Odd but valid names are photos like any other.
    shown = {os.fsencode(n).decode("utf-8", "backslashreplace") for n in GOOD_ODD_NAMES}
    assert accepted == {f"good_{i}.png" for i in range(3)} | shown

    # Whole subjects that cannot train say why; the others proceed.
    assert subjects["too_many"].state == REJECTED and "51 images" in subjects["too_many"].error
    bad_toml = subjects["bad_toml"]
    assert bad_toml.state == REJECTED and "subject.toml" in bad_toml.error
    assert "lora_strength" in bad_toml.error and "lora_strenght" in bad_toml.error
    assert subjects["only_bad"].state == REJECTED
    assert "no usable photo" in subjects["only_bad"].error
    for name in ("alice", "bob", "hostile", ODD_SUBJECT, "growing"):  # and the odd one below
        assert subjects[name].state == DONE and subjects[name].error is None, subjects[name]
    place = SubjectOutbox(root / "outbox" / "hostile", ODD_SUBJECT, 1)
    assert place.picture_name("01-portrait", 1, "png") == "dash-ünï-cödé-01-portrait-1.png"
    assert (place.folder / "01-portrait" / place.picture_name("01-portrait", 1, "png")).is_file()
    # A folder name that is not UTF-8 is shown escaped, and its subject.toml still counts.
    odd = subjects["bytes \\xff\\xfe"]
    assert odd.state == DONE and odd.error is None
    place = SubjectOutbox(root / "outbox" / "hostile", odd.name, 1)
    assert (place.folder / "02-again" / place.picture_name("02-again", 1, "png")).is_file()
    # The photo that changed while it was checked was taken in on the next pass, whole.
    assert subjects["growing"].image_count == 2
    assert trainings == 6

    # Nothing outside the inbox, the outbox and the state was read or written.
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    inbox_dir, secret = str(root / "inbox"), str(facts["secret"])
    assert not [e for e in events if e[2] == secret or e[2].startswith(str(root / "outside"))]
    assert facts["secret"].stat().st_atime_ns == facts["secret_atime"]
    writes = [e for e in events if e[0] == "write"
              and not e[2].startswith((str(root / "outbox"), str(root / "state"), "/dev/"))]
    assert writes == [], writes
    assert not [e for e in events if e[0] == "write" and e[2].startswith(inbox_dir)]
    allowed = allowed_reads(root, audit.parent)
    reads = [e for e in events if not e[2].startswith(allowed) and not import_listing(e)]
    assert reads == []
    record("hostile files tried", {
        "bad files": len(expected_refusals), "odd names accepted": len(GOOD_ODD_NAMES),
        "bad subjects (51 images, bad subject.toml, nothing usable)": 3,
        "nested folders": 1, "files changing during the scan": 1, "odd subject names": 2,
    })
