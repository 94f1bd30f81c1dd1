"""Job files: examples, defaults, error messages, subject.toml overrides, templates, slugs."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import ConfigError
from pipeline.jobfile.loading import (
    Component,
    GenerationOverrides,
    GenerationSection,
    JobConfig,
    PhotosSection,
    SubjectOverrides,
    SubjectSettings,
    TrainingOverrides,
    TrainingSection,
    load_job,
    load_subject_overrides,
    prompt_slug,
    render_template,
)

PROJECT = Path(__file__).resolve().parents[2]
DEFAULT_PROMPTS = '["{instance_prompt}, studio portrait"]'


def write_job(
    folder: Path,
    *,
    head: str = "",
    name: str = '"demo"',
    job: str = "",
    training: str = "",
    prompts: str = DEFAULT_PROMPTS,
    generation: str = "",
    tail: str = "",
    file: str = "job.toml",
) -> Path:
    """A job file with one line (or a few) changed in each table."""
    path = folder / file
    path.write_text(
        f"{head}\n[job]\nname = {name}\n{job}\n"
        f"[training]\n{training}\n"
        f"[generation]\nprompts = {prompts}\n{generation}\n"
        f"{tail}\n",
        encoding="utf-8",
    )
    return path


def subject_folder(inbox: Path, name: str, subject_toml: str | None = None) -> Path:
    folder = inbox / name
    folder.mkdir(parents=True)
    if subject_toml is not None:
        (folder / "subject.toml").write_text(subject_toml, encoding="utf-8")
    return folder


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_job(path)
    return str(info.value)


# --- the examples ---------------------------------------------------------------------------


def test_portraits_example_loads() -> None:
    config = load_job(PROJECT / "jobs" / "portraits.toml")
    assert config.job.name == "portraits"
    assert config.job.inbox == PROJECT / "inbox"
    assert config.job.outbox == PROJECT / "outbox"
    assert config.training.kind == "subject"
    assert len(config.generation.prompts) >= 2
    assert all("{instance_prompt}" in prompt for prompt in config.generation.prompts)
    assert config.path == PROJECT / "jobs" / "portraits.toml"


def test_styles_example_loads() -> None:
    config = load_job(PROJECT / "jobs" / "styles.toml")
    assert config.job.name == "styles"
    assert config.training.kind == "style"
    assert config.job.inbox != load_job(PROJECT / "jobs" / "portraits.toml").job.inbox
    expert = config.training.expert_setting("watercolor")
    assert "instance_prompt" not in expert and "class_prompt" not in expert


def test_examples_render_for_a_subject(tmp_path: Path) -> None:
    for file in ("portraits.toml", "styles.toml"):
        config = load_job(PROJECT / "jobs" / file)
        settings = config.subject_settings(tmp_path / "alice")
        assert [p.index for p in settings.prompts] == list(range(1, len(settings.prompts) + 1))
        assert all("{" not in p.text for p in settings.prompts)


def test_examples_load_from_any_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_job(PROJECT / "jobs" / "portraits.toml")
    assert config.job.inbox == PROJECT / "inbox"


# --- defaults and paths ---------------------------------------------------------------------


def test_defaults(tmp_path: Path) -> None:
    path = tmp_path / "job.toml"
    path.write_text('[job]\nname = "d"\n[generation]\nprompts = ["a photo"]\n', encoding="utf-8")
    config = load_job(path)
    job, training, generation = config.job, config.training, config.generation
    assert (job.inbox, job.outbox) == (tmp_path / "inbox", tmp_path / "outbox")
    assert job.settle_seconds == 30
    assert not job.require_ready_marker and not job.retrain_on_change
    assert job.max_training_retries == 0 and job.fetch_lora
    assert (job.max_images, job.min_images_warning) == (50, 10)
    assert training.kind == "subject"
    assert training.base_model == "v1-5-pruned-emaonly"
    assert (training.width, training.height) == (512, 512)
    assert training.instance_prompt == "a close photo of ohwx {class_word}"
    assert (training.class_prompt, training.class_word) == ("person", "person")
    assert (training.max_train_steps, training.learning_rate) == (500, 1e-4)
    assert (training.lr_scheduler, training.lr_warmup_steps) == ("constant", 0)
    assert training.train_batch_size == 1
    assert training.seed is None and training.lora_r is None
    assert [c.name for c in training.components] == ["face_crop_region", "resize", "face_restore"]
    assert training.captions == {}
    assert generation.model_name == "realisticVisionV51_v51VAE_94301.safetensors"
    assert generation.extra_prompts == [] and generation.negative_prompt is None
    assert (generation.lora_strength, generation.image_num) == (0.8, 1)
    assert (generation.width, generation.height, generation.steps) == (512, 512, 20)
    assert (generation.guidance_scale, generation.sampler_name) == (7.5, "Euler a")
    assert (generation.seed, generation.clip_skip) == (-1, None)
    assert generation.response_image_type == "png"
    assert config.on_complete is None
    assert config.path == path
    assert "path" not in config.model_dump()


def test_default_components_are_the_sdk_defaults() -> None:
    assert [c.to_api() for c in TrainingSection().components] == [
        {"name": "face_crop_region", "args": [{"name": "ratio", "value": "1.4"}]},
        {"name": "resize", "args": [{"name": "width", "value": "512"},
                                    {"name": "height", "value": "512"}]},
        {"name": "face_restore", "args": [{"name": "method", "value": "gfpgan_1.4"},
                                          {"name": "upscale", "value": "1.0"}]},
    ]


def test_relative_paths_follow_the_job_file_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = tmp_path / "project" / "jobs"
    jobs.mkdir(parents=True)
    absolute = tmp_path / "elsewhere" / "out"
    path = write_job(jobs, job=f'inbox = "../in"\noutbox = "{absolute}"')
    monkeypatch.chdir(tmp_path)
    config = load_job(path)
    assert config.job.inbox == tmp_path / "project" / "in"
    assert config.job.outbox == absolute


def test_on_complete_section(tmp_path: Path) -> None:
    tail = '[on_complete]\nwebhook = "https://example.com/hook"\ncommand = ["notify", "x"]\n'
    notify = load_job(write_job(tmp_path, tail=tail)).on_complete
    assert notify is not None
    assert notify.webhook == "https://example.com/hook"
    assert notify.command == ["notify", "x"]
    assert (notify.timeout_seconds, notify.retries) == (10, 3)
    tail = '[on_complete]\ncommand = "echo done"\n'
    notify = load_job(write_job(tmp_path, tail=tail)).on_complete
    assert notify is not None and notify.command == "echo done"


# --- errors name the file, the field, the value and what is allowed -------------------------

BAD_FIELDS = [
    # (table argument, text, field, fragments of the message)
    ("job", 'inbx = "x"', "job.inbx", ["unknown field", "did you mean 'inbox'", "settle_seconds"]),
    ("name", '"my job!"', "job.name", ["'my job!'", "letters, digits, '-' or '_'"]),
    ("name", '""', "job.name", ["1..64"]),
    ("name", '"' + "x" * 65 + '"', "job.name", ["1..64"]),
    ("job", "settle_seconds = -1", "job.settle_seconds", ["-1", "greater than or equal to 0"]),
    ("job", "settle_seconds = inf", "job.settle_seconds", ["finite"]),
    ("job", "max_training_retries = 6", "job.max_training_retries", ["less than or equal to 5"]),
    ("job", "max_images = 51", "job.max_images", ["less than or equal to 50"]),
    ("job", 'fetch_lora = "yes please"', "job.fetch_lora", ["valid boolean"]),
    ("training", 'base_model = "sd15"', "training.base_model",
     ["'sd15'", "'v1-5-pruned-emaonly'", "'stable-diffusion-xl-base-1.0'"]),
    ("training", 'kind = "person"', "training.kind", ["'subject' or 'style'"]),
    ("training", "learning_rate = 3e-4", "training.learning_rate",
     ["0.0003", "1e-6, 1e-5, 5e-5, 1e-4, 2e-4"]),
    ("training", 'lr_scheduler = "step"', "training.lr_scheduler", ["'cosine'"]),
    ("training", "train_batch_size = 5", "training.train_batch_size", ["less than or equal to 4"]),
    ("training", "max_train_steps = 0", "training.max_train_steps", ["greater than or equal to 1"]),
    ("training", "seed = 0", "training.seed", ["greater than or equal to 1"]),
    ("training", "lora_r = 200", "training.lora_r", ["200", "less than or equal to 128"]),
    ("training", "lora_text_encoder_alpha = 2", "training.lora_text_encoder_alpha",
     ["greater than or equal to 4"]),
    ("training", "prior_loss_weight = 0", "training.prior_loss_weight", ["greater than 0"]),
    ("training", 'instance_prompt = "ohwx {instance_prompt}"', "training.instance_prompt",
     ["unknown placeholder {instance_prompt}", "{subject}, {class_word}"]),
    ("training", "lr_warmup_steps = 10", "training", ["lr_warmup_steps", "'constant'", "cosine"]),
    ("training", 'components = [{ name = "upscale", args = {} }]', "training.components[0].name",
     ["'face_restore'", "'resize'"]),
    ("training", 'components = [{ name = "resize", args = { width = 512 } }]',
     "training.components[0]", ["missing: height"]),
    ("training", 'components = [{ name = "face_crop_region", args = { ratio = 1, r = 2 } }]',
     "training.components[0]", ["unknown: r", "takes args ratio"]),
    ("training", 'components = [{ name = "resize", arg = {} }]', "training.components[0].arg",
     ["did you mean 'args'"]),
    ("training", 'captions = { "a.png" = "" }', "training.captions['a.png']",
     ["at least 1 character"]),
    ("training", 'captions = { "a.png" = "' + "c" * 1025 + '" }', "training.captions['a.png']",
     ["at most 1024 characters"]),
    ("training", 'captions = { "sub/a.png" = "x" }', "training.captions['sub/a.png']",
     ["bare image file names"]),
    ("generation", "lora_strength = 1.5", "generation.lora_strength",
     ["= 1.5", "less than or equal to 1"]),
    ("generation", "image_num = 9", "generation.image_num", ["= 9", "less than or equal to 8"]),
    ("generation", 'sampler_name = "euler a"', "generation.sampler_name",
     ["'euler a'", "did you mean 'Euler a'", "'DPM++ 2M Karras'"]),
    ("generation", "width = 64", "generation.width", ["greater than or equal to 128"]),
    ("generation", "height = 4096", "generation.height", ["less than or equal to 2048"]),
    ("generation", "steps = 101", "generation.steps", ["less than or equal to 100"]),
    ("generation", "guidance_scale = 0.5", "generation.guidance_scale",
     ["greater than or equal to 1"]),
    ("generation", "seed = -2", "generation.seed", ["greater than or equal to -1"]),
    ("generation", "clip_skip = 13", "generation.clip_skip", ["less than or equal to 12"]),
    ("generation", 'response_image_type = "gif"', "generation.response_image_type",
     ["'png', 'jpeg' or 'webp'"]),
    ("generation", 'negative_prompt = ""', "generation.negative_prompt", ["at least 1 character"]),
    ("generation", 'lora_strenght = 0.5', "generation.lora_strenght",
     ["did you mean 'lora_strength'"]),
    ("generation", 'model_name = "epicrealismXL_v10_247189.safetensors"', "generation.model_name",
     ["SDXL checkpoint", "training.base_model = 'v1-5-pruned-emaonly' is SD 1.5"]),
    ("prompts", "[]", "generation.prompts", ["at least 1 item"]),
    ("prompts", "[" + ", ".join(['"p"'] * 101) + "]", "generation.prompts", ["at most 100 items"]),
    ("prompts", '["{instance_prompt} ' + "a" * 1010 + '"]', "generation.prompts[0]",
     ["renders to", "at most 1024 allowed"]),
    ("prompts", '["fine", "{instance_prompt} {name}"]', "generation.prompts[1]",
     ["unknown placeholder {name}", "{instance_prompt}, {subject}, {class_word}"]),
    ("prompts", '["{instance_prompt} }"]', "generation.prompts[0]",
     ["Single '}'", "{instance_prompt}, {subject}, {class_word}"]),
    ("prompts", '["{subject"]', "generation.prompts[0]", ["expected '}'"]),
    ("prompts", '["{subject:>20}"]', "generation.prompts[0]", ["unknown placeholder {subject:>20}"]),
    ("prompts", '["{}"]', "generation.prompts[0]", ["unknown placeholder {}"]),
    ("tail", '[generaton]\nsteps = 3', "generaton", ["did you mean 'generation'", "on_complete"]),
    ("head", 'path = "x"', "path", ["unknown field"]),
    ("tail", '[on_complete]\nwebhook = "ftp://example.com"', "on_complete.webhook",
     ["http:// or https://"]),
    ("tail", '[on_complete]\ncommand = []', "on_complete.command", ["non-empty list"]),
    ("tail", '[on_complete]\ncommand = 5', "on_complete.command", ["command line string"]),
    ("tail", '[on_complete]\ntimeout_seconds = 5', "on_complete", ["webhook, a command"]),
    ("tail", '[on_complete]\ncommand = "x"\nretries = 11', "on_complete.retries",
     ["less than or equal to 10"]),
]


@pytest.mark.parametrize(("table", "text", "field", "fragments"), BAD_FIELDS)
def test_errors_name_file_field_and_allowed(
    tmp_path: Path, table: str, text: str, field: str, fragments: list[str]
) -> None:
    path = write_job(tmp_path, **{table: text})
    message = config_error(path)
    line = next((line for line in message.splitlines() if f": {field}" in line), None)
    assert line is not None, message
    assert line.startswith(f"{path}: {field}"), message
    for fragment in fragments:
        assert fragment in line, line


def test_missing_fields_are_named(tmp_path: Path) -> None:
    path = tmp_path / "job.toml"
    path.write_text("[job]\n[generation]\nsteps = 3\n", encoding="utf-8")
    message = config_error(path)
    assert f"{path}: job.name: required" in message
    assert f"{path}: generation.prompts: required" in message


def test_several_errors_make_several_lines(tmp_path: Path) -> None:
    path = write_job(tmp_path, generation="lora_strength = 1.5\nimage_num = 9", job="nope = 1")
    lines = config_error(path).splitlines()
    assert len(lines) == 3
    assert all(line.startswith(f"{path}: ") for line in lines)


def test_toml_syntax_error_shows_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "job.toml"
    path.write_text('[job]\nname = "x"\n[generation]\nprompts = ["a"]\nsteps = 2 0\n',
                    encoding="utf-8")
    message = config_error(path)
    assert message.startswith(f"{path}: TOML syntax error")
    assert "line 5, column 11" in message


def test_missing_unreadable_and_binary_files(tmp_path: Path) -> None:
    assert config_error(tmp_path / "nope.toml") == f"{tmp_path / 'nope.toml'}: no such job file"
    assert config_error(tmp_path) == (
        f"{tmp_path} is not a regular file (a folder): name a plain text job file of at most "
        "1 MiB"
    )
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b'[job]\nname = "\xff"\n')
    assert "not UTF-8" in config_error(binary)


def test_outbox_inside_inbox_is_refused(tmp_path: Path) -> None:
    path = write_job(tmp_path, job='inbox = "in"\noutbox = "in/out"')
    message = config_error(path)
    assert "job.outbox" in message and "inside job.inbox" in message


# --- subject.toml ---------------------------------------------------------------------------


@pytest.fixture
def job(tmp_path: Path) -> JobConfig:
    return load_job(
        write_job(
            tmp_path,
            training='captions = { "a.png" = "job a", "b.png" = "job b" }',
            prompts='["{instance_prompt}, studio portrait", "{subject} the {class_word}"]',
            generation='extra_prompts = ["{instance_prompt} at the beach"]',
        )
    )


def test_no_subject_toml_means_the_job_settings(job: JobConfig) -> None:
    folder = subject_folder(job.job.inbox, "alice")
    assert load_subject_overrides(folder) == SubjectOverrides()
    settings = job.subject_settings(folder)
    assert settings.subject == "alice"
    assert settings.training == job.training
    assert settings.generation == job.generation
    assert [p.text for p in settings.prompts] == [
        "a close photo of ohwx person, studio portrait",
        "alice the person",
        "a close photo of ohwx person at the beach",
    ]
    assert settings.captions == {"a.png": "job a", "b.png": "job b"}
    assert settings.instance_prompt == "a close photo of ohwx person"
    assert settings.expert_setting()["instance_prompt"] == "a close photo of ohwx person"


def test_subject_class_word_extra_prompts_and_captions(job: JobConfig) -> None:
    folder = subject_folder(job.job.inbox, "bob", """
class_word = "man"
extra_prompts = ["{instance_prompt} as a knight"]
captions = { "b.png" = "bob b", "c.png" = "bob c" }
[training]
max_train_steps = 800
captions = { "b.png" = "table b", "d.png" = "table d" }
[generation]
extra_prompts = ["{class_word} in the snow"]
lora_strength = 0.6
""")
    settings = job.subject_settings(folder)
    assert settings.training.class_word == "man"
    assert settings.training.max_train_steps == 800
    assert settings.training.base_model == job.training.base_model
    assert settings.generation.lora_strength == 0.6
    assert [p.text for p in settings.prompts] == [
        "a close photo of ohwx man, studio portrait",
        "bob the man",
        "a close photo of ohwx man at the beach",
        "man in the snow",
        "a close photo of ohwx man as a knight",
    ]
    assert [p.index for p in settings.prompts] == [1, 2, 3, 4, 5]
    assert settings.captions == {
        "a.png": "job a", "b.png": "bob b", "c.png": "bob c", "d.png": "table d"
    }
    assert settings.training.captions == settings.captions
    # the job itself is untouched
    assert job.training.class_word == "person" and len(job.generation.extra_prompts) == 1


def test_subject_prompts_replace_the_jobs(job: JobConfig) -> None:
    folder = subject_folder(job.job.inbox, "carol", '[generation]\nprompts = ["{subject} only"]\n')
    texts = [p.text for p in job.subject_settings(folder).prompts]
    assert texts == ["carol only", "a close photo of ohwx person at the beach"]


@pytest.mark.parametrize(
    ("text", "field", "fragment"),
    [
        ("class_wrd = 'man'", "class_wrd", "did you mean 'class_word'"),
        ("[training]\nbase_model = 'sdxl'", "training.base_model", "'v1-5-pruned-emaonly'"),
        ("[training]\nname = 'x'", "training.name", "unknown field"),
        ("[generation]\nimage_num = 0", "generation.image_num", "greater than or equal to 1"),
        ("extra_prompts = ['{who}']", "extra_prompts[0]", "unknown placeholder {who}"),
        ("[job]\nname = 'x'", "job", "unknown field"),
        ("class_word = 'man'\n[training]\nclass_word = 'woman'", "", "class_word is set twice"),
    ],
)
def test_bad_subject_toml_names_its_path(
    job: JobConfig, text: str, field: str, fragment: str
) -> None:
    folder = subject_folder(job.job.inbox, "dave", text)
    for load in (lambda: load_subject_overrides(folder), lambda: job.subject_settings(folder)):
        with pytest.raises(ConfigError) as info:
            load()
        message = str(info.value)
        assert message.startswith(f"{folder / 'subject.toml'}: {field}"), message
        assert fragment in message, message


def test_subject_toml_syntax_error(job: JobConfig) -> None:
    folder = subject_folder(job.job.inbox, "erin", "class_word = \n")
    with pytest.raises(ConfigError, match=r"subject\.toml: TOML syntax error.*line 1"):
        job.subject_settings(folder)


def test_merged_settings_are_validated_again(job: JobConfig) -> None:
    folder = subject_folder(job.job.inbox, "fay", "[training]\nbase_model = 'epicrealismXL_v10_247189'\n")
    with pytest.raises(ConfigError) as info:
        job.subject_settings(folder)
    message = str(info.value)
    assert message.startswith(f"{folder / 'subject.toml'} (over {job.path}): ")
    assert "SD 1.5 checkpoint" in message

    folder = subject_folder(job.job.inbox, "gus", "extra_prompts = [" + ", ".join(['"p"'] * 98) + "]")
    with pytest.raises(ConfigError, match="101 prompts, at most 100"):
        job.subject_settings(folder)


def test_prompt_length_is_checked_with_the_real_subject(tmp_path: Path) -> None:
    config = load_job(write_job(tmp_path, prompts='["{subject} ' + "a" * 1000 + '"]'))
    subject_folder(config.job.inbox, "short")
    config.subject_settings(config.job.inbox / "short")
    folder = subject_folder(config.job.inbox, "a-rather-long-subject-folder-name")
    with pytest.raises(ConfigError) as info:
        config.subject_settings(folder)
    message = str(info.value)
    assert message.startswith(f"{config.path} (subject 'a-rather-long-subject-folder-name'): ")
    assert "generation.prompts[0]: renders to 1034 characters" in message


def test_override_models_cover_every_field() -> None:
    assert set(TrainingOverrides.model_fields) == set(TrainingSection.model_fields)
    assert set(GenerationOverrides.model_fields) == set(GenerationSection.model_fields)


def test_subject_settings_are_frozen(job: JobConfig) -> None:
    settings = job.subject_settings(subject_folder(job.job.inbox, "hal"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.subject = "other"  # type: ignore[misc]


def test_subject_settings_freeze_and_thaw_whole(job: JobConfig) -> None:
    folder = subject_folder(job.job.inbox, "ida", """
class_word = "woman"
captions = { "x.png" = "a woman, smiling" }
[training]
kind = "style"
base_model = "chilloutmix_NiPrunedFp32Fix"
width = 768
learning_rate = 5e-5
components = [{ name = "resize", args = { width = 768, height = 768 } }]
[generation]
lora_strength = 0.55
negative_prompt = "blurry"
""")
    settings = job.subject_settings(folder)

    frozen = settings.freeze()
    thawed = SubjectSettings.thaw(frozen)

    assert thawed == settings
    assert thawed.expert_setting() == settings.expert_setting()
    assert thawed.training.components_api() == [{"name": "resize", "args": [
        {"name": "width", "value": "768"}, {"name": "height", "value": "768"}]}]
    data = json.loads(frozen)
    assert data["training"]["kind"] == "style" and data["generation"]["lora_strength"] == 0.55
    assert data["prompts"][0] == {"index": 1, "template": "{instance_prompt}, studio portrait",
                                  "text": "a close photo of ohwx woman, studio portrait",
                                  "slug": "01-studio-portrait"}
    assert data["captions"]["x.png"] == "a woman, smiling"
    with pytest.raises(ValueError, match="frozen settings cannot be read"):
        SubjectSettings.thaw(frozen.replace('"format": 1', '"format": 2'))


def test_a_subject_folder_swapped_for_a_link_while_its_toml_is_read_is_refused(
    job: JobConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = subject_folder(job.job.inbox, "jo", 'class_word = "woman"\n')
    elsewhere = job.job.inbox.parent / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "subject.toml").write_text('class_word = "burglar"\n')
    resolve = os.path.realpath

    def swapped_after_the_look(path: Any, *args: Any, **kwargs: Any) -> str:
        found = resolve(path, *args, **kwargs)
        if str(path).endswith("subject.toml") and not os.path.islink(folder):
            folder.rename(folder.with_name("jo.moved"))  # between the look and the read
            folder.symlink_to(elsewhere)
        return found

    monkeypatch.setattr(os.path, "realpath", swapped_after_the_look)

    with pytest.raises(ConfigError) as caught:
        job.subject_settings(folder)

    assert str(caught.value) == (
        f"{folder / 'subject.toml'} is reached through a link (jo), which is not followed: "
        "replace it with a plain text file (at most 256 KiB)"
    )


# --- templates and slugs --------------------------------------------------------------------


def test_render_template() -> None:
    values = {"instance_prompt": "photo of ohwx {class_word} named {subject}",
              "subject": "alice", "class_word": "woman"}
    assert render_template("{instance_prompt}, 4k", **values) == (
        "photo of ohwx woman named alice, 4k"
    )
    assert render_template("{subject}/{class_word}", **values) == "alice/woman"
    assert render_template("{{literal}} {subject}", **values) == "{literal} alice"
    # a subject's name is inserted as it is, never parsed as a template
    assert render_template("{subject}", **{**values, "subject": "{weird}"}) == "{weird}"


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("{name} smiling", "unknown placeholder {name}"),
        ("{subject!r}", "unknown placeholder {subject!r}"),
        ("{0}", "unknown placeholder {0}"),
        ("a } b", "Single '}'"),
        ("a { b", "'}'"),
    ],
)
def test_render_template_errors(template: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        render_template(template, instance_prompt="x", subject="s", class_word="c")
    message = str(info.value)
    assert repr(template) in message and fragment in message
    assert "{instance_prompt}, {subject}, {class_word}" in message


def test_instance_prompt_may_not_use_itself() -> None:
    with pytest.raises(ConfigError, match=r"unknown placeholder \{instance_prompt\}"):
        render_template("x", instance_prompt="{instance_prompt}", subject="s", class_word="c")


def test_slugs() -> None:
    assert prompt_slug(1, "{instance_prompt}, studio portrait, soft light") == (
        "01-studio-portrait-soft-light"
    )
    assert prompt_slug(12, "Café à Paris — {subject}!") == "12-cafe-a-paris"
    assert prompt_slug(3, "{instance_prompt}") == "03"
    assert prompt_slug(100, "x") == "100-x"
    long = prompt_slug(4, "word " * 40)
    assert len(long) <= 60 and long.endswith("-word")
    assert prompt_slug(5, "a" * 100) == "05-" + "a" * 57


def test_slugs_are_unique_safe_and_independent_of_the_subject(tmp_path: Path) -> None:
    prompts = ['"{instance_prompt}, studio"'] * 3 + ['"../../etc/passwd"', '"{subject}"',
                                                     '"' + "long words here " * 10 + '"']
    config = load_job(write_job(tmp_path, prompts="[" + ", ".join(prompts) + "]"))
    one = config.subject_settings(tmp_path / "alice").prompts
    two = config.subject_settings(tmp_path / "bob").prompts
    slugs = [p.slug for p in one]
    assert len(set(slugs)) == len(slugs)
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", s) and len(s) <= 60 for s in slugs)
    assert slugs == [p.slug for p in two]
    assert one[3].slug == "04-etc-passwd"


# --- the API shapes -------------------------------------------------------------------------


def test_component_to_api_stringifies() -> None:
    component = Component(name="face_restore", args={"method": "gfpgan_1.4", "upscale": 1})
    assert component.to_api() == {
        "name": "face_restore",
        "args": [{"name": "method", "value": "gfpgan_1.4"}, {"name": "upscale", "value": "1"}],
    }
    ratio = Component(name="face_crop_region", args={"ratio": 1.4}).to_api()
    assert ratio["args"] == [{"name": "ratio", "value": "1.4"}]


def test_expert_setting_for_a_subject() -> None:
    training = TrainingSection(instance_prompt="ohwx {class_word} {subject}", class_word="man",
                               seed=7, lora_r=32, train_text_encoder=False,
                               lr_scheduler="cosine", lr_warmup_steps=50)
    assert training.expert_setting("bob") == {
        "instance_prompt": "ohwx man bob",
        "class_prompt": "person",
        "max_train_steps": 500,
        "learning_rate": 1e-4,
        "lr_scheduler": "cosine",
        "lr_warmup_steps": 50,
        "train_batch_size": 1,
        "seed": 7,
        "train_text_encoder": False,
        "lora_r": 32,
    }
    json.dumps(training.expert_setting("bob"))


def test_expert_setting_for_a_style_leaves_the_prompts_out() -> None:
    expert = TrainingSection(kind="style").expert_setting("watercolor")
    assert set(expert) == {"max_train_steps", "learning_rate", "lr_scheduler",
                           "lr_warmup_steps", "train_batch_size"}


def test_every_photo_gate_setting_is_documented_and_can_be_set_per_subject(tmp_path: Path) -> None:
    readme = (PROJECT / "jobs" / "README.md").read_text(encoding="utf-8")
    section = readme.split("## [photos]", 1)[1].split("\n## ", 1)[0]
    for field in PhotosSection.model_fields:
        assert f"`{field}`" in section, field
    job = tmp_path / "job.toml"
    job.write_text(
        '[job]\nname = "j"\n[generation]\nprompts = ["{instance_prompt}"]\n'
        '[photos]\nmin_sharpness = 50\nsoft_sharpness = 90\n', encoding="utf-8")
    folder = tmp_path / "inbox" / "alice"
    folder.mkdir(parents=True)
    (folder / "subject.toml").write_text(
        '[photos]\nfaces = "off"\nkeep_metadata = true\n', encoding="utf-8")
    settings = load_job(job).subject_settings(folder)
    gate = settings.photo_settings()
    assert (gate.faces, gate.keep_metadata, gate.min_sharpness) == ("off", True, 50)
    assert SubjectSettings.thaw(settings.freeze()).photos == settings.photos
    (folder / "subject.toml").write_text('[photos]\nsoft_sharpness = 10\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="soft_sharpness"):
        load_job(job).subject_settings(folder)
