"""img2img prompts in a job file and a subject.toml: the table form, where an init image may
be, every refusal with the file and what to do, and the rendered prompts frozen with it."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from pipeline.errors import ConfigError
from pipeline.jobfile.loading import (
    ImagePrompt,
    JobConfig,
    RenderedPrompt,
    SubjectSettings,
    load_job,
)
from tests.jobfile.test_loading import subject_folder, write_job
from tests.pictures import picture_bytes

POSE = picture_bytes("JPEG", (96, 128), seed=7)
SKETCH = picture_bytes("PNG", (64, 64), seed=8)
MIXED = (
    '["{instance_prompt}, studio", { prompt = "{instance_prompt} as an oil painting",'
    ' init_image = "refs/pose.jpg", strength = 0.6 }]'
)


def _refs(folder: Path, name: str = "pose.jpg", data: bytes = POSE) -> Path:
    path = folder / "refs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _job(tmp_path: Path, prompts: str = MIXED, generation: str = "") -> Path:
    _refs(tmp_path)
    return write_job(tmp_path, job='inbox = "inbox"', prompts=prompts, generation=generation)


def _load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_job(path)
    return str(info.value)


@pytest.fixture
def job(tmp_path: Path) -> JobConfig:
    config = load_job(_job(tmp_path))
    config.job.inbox.mkdir(exist_ok=True)
    return config


# --- the job file ---------------------------------------------------------------------------


def test_plain_and_table_prompts_render_side_by_side(tmp_path: Path) -> None:
    config = load_job(_job(tmp_path))
    plain, table = config.generation.prompts
    assert plain == "{instance_prompt}, studio"  # a plain prompt stays a string
    assert isinstance(table, ImagePrompt)
    assert table.init_image == str(tmp_path / "refs" / "pose.jpg")  # from the job file's folder
    assert table.strength == 0.6

    settings = config.subject_settings(subject_folder(config.job.inbox, "alice"))

    txt, img = settings.prompts
    assert (txt.img2img, txt.init_image, txt.strength) == (False, None, None)
    assert img.text == "a close photo of ohwx person as an oil painting"
    assert img.slug == "02-as-an-oil-painting"
    assert img.init_image == str(tmp_path / "refs" / "pose.jpg")
    assert img.init_sha256 == hashlib.sha256(POSE).hexdigest() and img.strength == 0.6
    assert settings.init_images == {img.init_sha256: POSE}  # the bytes, to keep with it


def test_a_table_without_strength_gets_the_services_default_and_without_image_is_txt2img(
    tmp_path: Path,
) -> None:
    prompts = ('[{ prompt = "{subject} painted", init_image = "refs/pose.jpg" },'
               ' { prompt = "{subject} plain" }]')
    config = load_job(_job(tmp_path, prompts))
    settings = config.subject_settings(subject_folder(config.job.inbox, "bo"))
    assert [(p.text, p.img2img, p.strength) for p in settings.prompts] == [
        ("bo painted", True, 0.5), ("bo plain", False, None)]


def test_extra_prompts_take_tables_too(tmp_path: Path) -> None:
    config = load_job(_job(tmp_path, '["{subject}"]', generation=(
        'extra_prompts = [{ prompt = "{subject} sketch", init_image = "refs/pose.jpg",'
        ' strength = 0.25 }]')))
    settings = config.subject_settings(subject_folder(config.job.inbox, "cy"))
    assert [(p.index, p.img2img, p.strength) for p in settings.prompts] == [
        (1, False, None), (2, True, 0.25)]


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ('{ prompt = "x", init_image = "refs/pose.jpg", strength = 1.5 }',
         "generation.prompts[0].strength = 1.5: Input should be less than or equal to 1"),
        ('{ prompt = "x", init_image = "refs/pose.jpg", strength = -0.1 }',
         "generation.prompts[0].strength = -0.1: Input should be greater than or equal to 0"),
        ('{ prompt = "x", init_image = "refs/pose.jpg", strength = nan }',
         "generation.prompts[0].strength = nan"),
        ('{ prompt = "x", strength = 0.5 }',
         "generation.prompts[0]: strength is how much img2img changes the init image"),
        ('{ prompt = "x", init_imag = "refs/pose.jpg" }',
         "generation.prompts[0].init_imag = 'refs/pose.jpg': unknown field; did you mean "
         "'init_image'? allowed fields: prompt, init_image, strength"),
        ('{ init_image = "refs/pose.jpg" }', "generation.prompts[0].prompt: required, missing"),
        ('{ prompt = "{who}", init_image = "refs/pose.jpg" }',
         "generation.prompts[0].prompt = '{who}': template '{who}': unknown placeholder"),
        ('{ prompt = "x", init_image = "" }',
         "generation.prompts[0].init_image = '': must name a picture file"),
        ("5", "generation.prompts[0] = 5: must be a prompt, or a table such as"),
    ],
)
def test_bad_tables_name_the_field(tmp_path: Path, entry: str, fragment: str) -> None:
    message = _load_error(_job(tmp_path, f"[{entry}]"))
    assert message.startswith(f"{tmp_path / 'job.toml'}: "), message
    assert fragment in message, message


def _bad_pose(tmp_path: Path, data: bytes | None = None, *, name: str = "pose.jpg") -> str:
    job = _job(tmp_path)
    pose = tmp_path / "refs" / "pose.jpg"
    pose.unlink()
    if data is not None:
        _refs(tmp_path, name, data)
    return _load_error(job)


def test_a_missing_init_image_stops_the_job_at_load_time(tmp_path: Path) -> None:
    message = _bad_pose(tmp_path)
    pose = tmp_path / "refs" / "pose.jpg"
    assert message == (
        f"{tmp_path / 'job.toml'}: generation.prompts[1].init_image = 'refs/pose.jpg': "
        f"{pose} does not exist: check the name, or copy it there")


def _gif() -> bytes:
    out = __import__("io").BytesIO()
    Image.new("RGB", (8, 8), "red").save(out, "GIF")
    return out.getvalue()


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (_gif(), "is a GIF image, not png/jpeg/webp: img2img takes only those; convert it to "
                 "PNG or JPEG"),
        (b"", "is empty (0 bytes): copy the picture again"),
        (POSE[: len(POSE) // 2], "is a damaged JPEG file ("),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * (10_000_001 - 8),
         "is 10.0 MB, over the 10.0 MB img2img takes: export it smaller"),
    ],
    ids=["gif", "empty", "truncated", "too-many-bytes"],
)
def test_a_bad_init_image_is_refused_with_what_to_do(
    tmp_path: Path, data: bytes, fragment: str
) -> None:
    message = _bad_pose(tmp_path, data)
    assert message.startswith(
        f"{tmp_path / 'job.toml'}: generation.prompts[1].init_image = 'refs/pose.jpg': "
        f"{tmp_path / 'refs' / 'pose.jpg'} "), message
    assert fragment in message, message


def test_too_many_megapixels_is_refused_before_it_is_decoded(tmp_path: Path) -> None:
    out = __import__("io").BytesIO()
    Image.new("L", (5000, 3300)).save(out, "PNG")  # 16.5 MP, a few KB
    message = _bad_pose(tmp_path, out.getvalue())
    assert "is 5000x3300 (16.5 megapixels), over the 16 megapixels img2img takes: scale it " \
           "down" in message, message


def test_a_job_init_image_may_not_be_in_the_inbox(tmp_path: Path) -> None:
    _refs(tmp_path / "inbox" / "alice")
    job = write_job(tmp_path, prompts='[{ prompt = "x", init_image = "inbox/alice/refs/pose.jpg" }]')
    message = _load_error(job)
    assert "is inside the inbox" in message and "beside the job file" in message, message


def test_a_job_init_image_is_the_operators_and_may_be_a_link(tmp_path: Path) -> None:
    elsewhere = _refs(tmp_path / "library")
    (tmp_path / "refs").mkdir()
    (tmp_path / "refs" / "pose.jpg").symlink_to(elsewhere)
    job = write_job(tmp_path, prompts=MIXED)
    config = load_job(job)
    settings = config.subject_settings(subject_folder(config.job.inbox, "di"))
    assert settings.prompts[1].init_sha256 == hashlib.sha256(POSE).hexdigest()


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    job = _job(tmp_path)
    (tmp_path / "refs" / "pose.jpg").unlink()
    os.mkfifo(tmp_path / "refs" / "pose.jpg")
    assert "is not a regular file (a FIFO)" in _load_error(job)


def test_a_job_init_image_changed_after_loading_is_judged_when_the_subject_is_taken_in(
    job: JobConfig, tmp_path: Path
) -> None:
    (tmp_path / "refs" / "pose.jpg").write_bytes(_gif())
    with pytest.raises(ConfigError) as info:
        job.subject_settings(subject_folder(job.job.inbox, "eve"))
    assert str(info.value).startswith(
        f"{job.path}: generation.prompts[1].init_image = 'refs/pose.jpg': "), info.value
    assert "is a GIF image" in str(info.value)


# --- a subject.toml -------------------------------------------------------------------------


def test_a_subject_toml_names_an_init_image_in_its_own_folder(job: JobConfig) -> None:
    folder = subject_folder(job.job.inbox, "fay", """
extra_prompts = [{ prompt = "{subject} from her sketch", init_image = "refs/sketch.png", strength = 0.3 }]
""")
    _refs(folder, "sketch.png", SKETCH)
    settings = job.subject_settings(folder)
    last = settings.prompts[-1]
    assert (last.index, last.text, last.strength) == (3, "fay from her sketch", 0.3)
    assert last.init_image == str(folder / "refs" / "sketch.png")
    assert set(settings.init_images) == {hashlib.sha256(POSE).hexdigest(),
                                         hashlib.sha256(SKETCH).hexdigest()}


def test_a_subject_toml_may_replace_the_prompts_with_its_own_tables(job: JobConfig) -> None:
    folder = subject_folder(job.job.inbox, "gil", """
[generation]
prompts = [{ prompt = "{subject} posed", init_image = "refs/pose.jpg" }]
""")
    _refs(folder, "pose.jpg", SKETCH)  # its own refs/pose.jpg, not the job's
    [prompt] = job.subject_settings(folder).prompts
    assert prompt.init_image == str(folder / "refs" / "pose.jpg")
    assert prompt.init_sha256 == hashlib.sha256(SKETCH).hexdigest()


@pytest.mark.parametrize(
    ("given", "fragment"),
    [
        ("../hal/refs/pose.jpg", "is not inside ivy/: a subject.toml may name only a picture "
                                 "in its own folder"),
        ("{outside}", "is not inside ivy/"),
        ("pose.jpg", "is directly in ivy/, where every picture is a training photo: move it "
                     "into a subfolder, such as ivy/refs/"),
        ("refs/missing.jpg", "does not exist"),
        ("refs/link.jpg", "is a link that points outside ivy/: copy the picture itself there"),
        ("linked/pose.jpg", "is a link that points outside ivy/"),
    ],
)
def test_a_subject_init_image_outside_its_folder_is_refused(
    job: JobConfig, tmp_path: Path, given: str, fragment: str
) -> None:
    outside = _refs(tmp_path / "elsewhere")
    given = given.format(outside=outside)
    folder = subject_folder(job.job.inbox, "ivy", (
        f'extra_prompts = [{{ prompt = "x", init_image = "{given}" }}]\n'))
    _refs(job.job.inbox / "hal")
    (folder / "pose.jpg").write_bytes(POSE)
    (folder / "refs").mkdir()
    (folder / "refs" / "link.jpg").symlink_to(outside)
    (folder / "linked").symlink_to(outside.parent)
    with pytest.raises(ConfigError) as info:
        job.subject_settings(folder)
    message = str(info.value)
    assert message.startswith(
        f"{folder / 'subject.toml'}: extra_prompts[0].init_image = {given!r}: "), message
    assert fragment in message, message


def test_a_subject_init_image_reached_through_a_link_on_the_way_is_refused(
    job: JobConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder holding it swapped for a link between the look and the read: the read
    goes from the inbox down and follows no link."""
    folder = subject_folder(job.job.inbox, "jo", (
        'extra_prompts = [{ prompt = "x", init_image = "refs/pose.jpg" }]\n'))
    _refs(folder)
    elsewhere = _refs(job.job.inbox.parent / "elsewhere").parent
    resolve = os.path.realpath

    def swapped_after_the_look(path: object, *args: object, **kwargs: object) -> str:
        found = resolve(path, *args, **kwargs)  # type: ignore[call-overload]
        refs = folder / "refs"
        if str(path) == str(refs / "pose.jpg") and not os.path.islink(refs):
            refs.rename(folder / "refs.moved")
            refs.symlink_to(elsewhere)
        return str(found)

    monkeypatch.setattr(os.path, "realpath", swapped_after_the_look)
    with pytest.raises(ConfigError, match=r"is reached through a link \(jo/refs\), which is not "
                                          "followed: replace it with the picture itself"):
        job.subject_settings(folder)


# --- frozen with the version ----------------------------------------------------------------


def test_rendered_img2img_prompts_freeze_and_thaw(job: JobConfig) -> None:
    settings = job.subject_settings(subject_folder(job.job.inbox, "kim"))
    frozen = settings.freeze()
    thawed = SubjectSettings.thaw(frozen)
    assert thawed == settings and thawed.prompts[1].img2img
    assert thawed.init_images == {}  # the bytes are kept in the state, never frozen
    data = json.loads(frozen)
    assert "init_image" not in data["prompts"][0]  # a txt2img prompt as it always was
    assert data["prompts"][1]["strength"] == 0.6
    assert data["prompts"][1]["init_sha256"] == hashlib.sha256(POSE).hexdigest()


def test_settings_frozen_before_img2img_are_read_as_txt2img(job: JobConfig) -> None:
    frozen = json.loads(job.subject_settings(subject_folder(job.job.inbox, "lu")).freeze())
    frozen["generation"]["prompts"] = ["{instance_prompt}, studio"]
    frozen["prompts"] = [{"index": 1, "template": "{instance_prompt}, studio",
                          "text": "a close photo of ohwx person, studio", "slug": "01-studio"}]
    thawed = SubjectSettings.thaw(json.dumps(frozen))
    assert thawed.prompts == [RenderedPrompt(1, "{instance_prompt}, studio",
                                             "a close photo of ohwx person, studio", "01-studio")]
    assert not thawed.prompts[0].img2img


# --- the docs -------------------------------------------------------------------------------


def test_the_table_form_is_documented_with_an_example_that_loads(tmp_path: Path) -> None:
    project = Path(__file__).resolve().parents[2]
    readme = (project / "jobs" / "README.md").read_text(encoding="utf-8")
    section = readme.split("## [generation]", 1)[1].split("\n## ", 1)[0]
    for field in ImagePrompt.model_fields:
        assert f"`{field}`" in section, field
    example = section.split("    prompts = [", 1)[1].split("    ]", 1)[0]
    job = _job(tmp_path, prompts="[" + example + "]")
    [plain, table] = load_job(job).generation.prompts
    assert plain == "{instance_prompt}, studio portrait"
    assert isinstance(table, ImagePrompt) and table.strength == 0.6
