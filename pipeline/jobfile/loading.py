"""Job files: load a job's TOML, apply a subject's ``subject.toml``, render its prompts.

    config = load_job(Path("jobs/portraits.toml"))       # ConfigError if anything is off
    settings = config.subject_settings(config.job.inbox / "alice")
    settings.training.expert_setting(settings.subject)    # the training request's settings
    for prompt in settings.prompts:                        # one txt2img or img2img each
        prompt.slug, prompt.text
    frozen = settings.readable().freeze()                  # kept with the subject's version
    SubjectSettings.thaw(frozen) == settings.readable()   # True, whatever the files say now

Every error is a :class:`~pipeline.errors.ConfigError` whose lines name the file, the field
(``generation.lora_strength``), the bad value and what is allowed. The sections themselves
are in :mod:`pipeline.jobfile.schema`, the templates in :mod:`pipeline.jobfile.templates`;
the fields are described in ``jobs/README.md``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Self

from pydantic import Field, ValidationError, model_validator
from pydantic.json_schema import SkipJsonSchema

from ..api.contract import BASE_MODELS, MAX_TEXT_LENGTH, SDXL_BASE_MODELS
from ..errors import ConfigError
from ..inputs.dataset import display_name
from ..inputs.init_images import InitImage
from ..inputs.photo_checks import PhotoSettings
from ..inputs.safe_files import RefusedFile, read_beneath, read_inbox_file, size_text
from .init_refs import job_paths_resolved, read_init_images, subject_paths_resolved
from .messages import config_error
from .prompts import ImagePrompt, as_table
from .schema import (
    Component,
    GenerationOverrides,
    GenerationSection,
    JobSection,
    NotifySection,
    PhotosSection,
    StrictModel,
    SubjectOverrides,
    TrainingOverrides,
    TrainingSection,
)
from .spending import MaxSpendSection, PricesSection
from .templates import TemplateError, fill_template, prompt_slug, render_template

__all__ = [
    "Component",
    "GenerationOverrides",
    "GenerationSection",
    "ImagePrompt",
    "JobConfig",
    "JobSection",
    "MaxSpendSection",
    "NotifySection",
    "PhotosSection",
    "PricesSection",
    "RenderedPrompt",
    "SubjectOverrides",
    "SubjectSettings",
    "TrainingOverrides",
    "TrainingSection",
    "load_job",
    "load_subject_overrides",
    "prompt_slug",
    "render_template",
]

SUBJECT_FILE: Final = "subject.toml"
#: A ``subject.toml`` is read up to this many bytes; a job file up to MAX_JOB_FILE_BYTES.
MAX_SUBJECT_FILE_BYTES: Final = 256 * 1024
MAX_JOB_FILE_BYTES: Final = 1024 * 1024
#: The job file is the operator's own: a link to anywhere is followed.
_ANYWHERE: Final = Path("/")
#: Stands in for the subject's folder name when prompts are checked at load time.
SAMPLE_SUBJECT: Final = "subject"
#: The layout of :meth:`SubjectSettings.freeze`'s JSON; :meth:`SubjectSettings.thaw` reads
#: this one only.
FROZEN_FORMAT: Final = 1


@dataclass(frozen=True, slots=True)
class RenderedPrompt:
    """One prompt ready to send: ``index`` counts from 1 over prompts + extra_prompts.

    A prompt with an ``init_image`` (its absolute path as people read it) goes through
    img2img from the picture whose sha256 is ``init_sha256`` (kept in the state when the
    subject was taken in), with ``strength``; the others through txt2img. Settings frozen
    before img2img existed have none of the three: txt2img, as they were.
    """

    index: int
    template: str
    text: str
    slug: str
    init_image: str | None = None
    init_sha256: str | None = None
    strength: float | None = None

    @property
    def img2img(self) -> bool:
        return self.init_sha256 is not None


@dataclass(frozen=True)
class SubjectSettings:
    """What one subject gets: the job's sections with its ``subject.toml`` applied."""

    subject: str
    training: TrainingSection
    generation: GenerationSection
    prompts: list[RenderedPrompt]
    captions: dict[str, str]
    photos: PhotosSection = dataclasses.field(default_factory=PhotosSection)
    #: The bytes of the init images, by sha256, as read when these settings were made; to
    #: keep in the state with the version (never frozen, never compared: thawed settings
    #: have none).
    init_images: Mapping[str, bytes] = dataclasses.field(
        default_factory=dict, compare=False, repr=False
    )

    @property
    def instance_prompt(self) -> str:
        """The rendered instance prompt (``ohwx`` token and class word filled in)."""
        return self.training.render_instance_prompt(self.subject)

    def photo_settings(self) -> PhotoSettings:
        """The photo gate's thresholds for this subject, with its training size."""
        return self.photos.settings((self.training.width, self.training.height))

    def expert_setting(self) -> dict[str, Any]:
        """The training request's ``expert_setting`` for this subject."""
        return self.training.expert_setting(self.subject)

    def readable(self) -> SubjectSettings:
        """These settings with a folder name that is not valid UTF-8 spelt as people read it
        (``caf\\xe9``).

        Rendered into prompts as it is, its undecodable bytes (lone surrogates in Python) can
        be neither stored, nor written to a sidecar, nor sent as JSON.
        """
        prompts = [
            dataclasses.replace(
                p, text=display_name(p.text),
                init_image=None if p.init_image is None else display_name(p.init_image),
            )
            for p in self.prompts
        ]
        if display_name(self.subject) == self.subject and prompts == self.prompts:
            return self
        return dataclasses.replace(self, subject=display_name(self.subject), prompts=prompts)

    def freeze(self) -> str:
        """These settings as JSON, to keep with the subject's version: every training and
        generation field, the rendered prompts and the captions. :meth:`thaw` reads it back
        whatever the job file and ``subject.toml`` say by then.
        """
        data = {
            "format": FROZEN_FORMAT,
            "subject": self.subject,
            "training": self.training.model_dump(mode="json"),
            "generation": self.generation.model_dump(mode="json"),
            # A txt2img prompt is written as before img2img existed: no null init image.
            "prompts": [{key: value for key, value in dataclasses.asdict(prompt).items()
                         if value is not None} for prompt in self.prompts],
            "captions": self.captions,
            "photos": self.photos.model_dump(mode="json"),
        }
        # Keys stay in their order (a component's args are sent in it). Every "?" is spelt
        # \u003f: the state store cuts what follows a "?" in anything that looks like a URL
        # (presigned signatures), and a prompt may hold one.
        return json.dumps(data).replace("?", "\\u003f")

    @classmethod
    def thaw(cls, frozen: str) -> SubjectSettings:
        """The settings :meth:`freeze` wrote. Raises ``ValueError`` saying what is wrong
        when ``frozen`` is not such a text (the caller names the subject)."""
        try:
            data = json.loads(frozen)
            if not isinstance(data, dict) or data.get("format") != FROZEN_FORMAT:
                raise ValueError(f"not settings of format {FROZEN_FORMAT}")
            return cls(
                subject=str(data["subject"]),
                training=TrainingSection.model_validate(data["training"]),
                generation=GenerationSection.model_validate(data["generation"]),
                prompts=[RenderedPrompt(**prompt) for prompt in data["prompts"]],
                captions={str(k): str(v) for k, v in data["captions"].items()},
                # Versions frozen before the photo gate had settings were judged by defaults.
                photos=PhotosSection.model_validate(data.get("photos", {})),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ValueError(f"frozen settings cannot be read: {detail}") from exc


class JobConfig(StrictModel):
    """A whole job file. Build it with :func:`load_job`, which also sets ``path``."""

    job: JobSection
    training: TrainingSection = Field(default_factory=TrainingSection)
    generation: GenerationSection
    photos: PhotosSection = Field(default_factory=PhotosSection)
    on_complete: NotifySection | None = None
    prices: PricesSection | None = None
    max_spend: MaxSpendSection | None = None
    path: SkipJsonSchema[Path] = Field(default=Path("job.toml"), exclude=True)

    @model_validator(mode="after")
    def _cross_check(self) -> Self:
        problems = _family_problems(self.training, self.generation)
        problems += _render_problems(self.training, self.generation, SAMPLE_SUBJECT)
        if self.max_spend is not None and self.max_spend.uses_money and self.prices is None:
            problems.append("max_spend: a money ceiling needs a [prices] table (the pipeline "
                            "never guesses the service's prices): add one, or cap trainings "
                            "and images instead")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def subject_settings(self, folder: Path) -> SubjectSettings:
        """The effective settings of the subject in ``folder`` (its ``subject.toml`` applied).

        The merged sections are validated again, and the prompts rendered with the subject's
        name; any problem is a ConfigError naming the job file and the subject.toml.
        """
        overrides, found = _subject_overrides(folder)
        subject = folder.name
        training = self.training.model_dump() | overrides.training_updates()
        training["captions"] = self.training.captions | overrides.all_captions()
        job_generation, job_refs = job_paths_resolved(
            self.generation.model_dump(), self.path.parent, str(self.path)
        )
        lists = overrides.prompt_lists()
        resolved, subject_refs = subject_paths_resolved(lists, folder, str(folder / SUBJECT_FILE))
        own = {label: entries for (label, _), entries in zip(lists, resolved, strict=True)}
        generation = job_generation | overrides.generation_updates()
        if "generation.prompts" in own:
            generation["prompts"] = own["generation.prompts"]
        generation["extra_prompts"] = [
            *job_generation["extra_prompts"], *own.get("generation.extra_prompts", []),
            *own.get("extra_prompts", []),
        ]
        source = (f"{folder / SUBJECT_FILE} (over {self.path})" if found
                  else f"{self.path} (subject {subject!r})")
        photos = self.photos.model_dump() | overrides.photos_updates()
        data = {"job": self.job, "training": training, "generation": generation,
                "photos": photos, "on_complete": self.on_complete, "prices": self.prices,
                "max_spend": self.max_spend, "path": self.path}
        try:
            merged = JobConfig.model_validate(data)
        except ValidationError as exc:
            raise config_error(source, exc, JobConfig) from None
        problems = _render_problems(merged.training, merged.generation, subject)
        if problems:
            raise ConfigError("\n".join(f"{source}: {line}" for line in problems))
        images = read_init_images(
            (entry.init_image for entry in merged.generation.entries() if entry.init_image),
            [*job_refs, *subject_refs], inbox=self.job.inbox, fallback=str(self.path),
        )
        return SubjectSettings(
            subject=subject,
            training=merged.training,
            generation=merged.generation,
            prompts=render_prompts(merged.training, merged.generation, subject, images),
            captions=dict(merged.training.captions),
            photos=merged.photos,
            init_images={image.sha256: image.data for image in images.values()},
        )


def load_job(path: Path) -> JobConfig:
    """Read and check a job file; relative inbox/outbox are taken from the file's folder.

    >>> config = load_job(Path("jobs/portraits.toml"))  # doctest: +SKIP
    >>> config.job.inbox                                 # doctest: +SKIP
    PosixPath('/srv/lora-pipeline/inbox')
    """
    advice = f"name a plain text job file of at most {size_text(MAX_JOB_FILE_BYTES)}"
    data = _read_toml(
        path, lambda: read_inbox_file(path, limit=MAX_JOB_FILE_BYTES, root=_ANYWHERE),
        advice=advice,
    )
    if data is None:
        raise ConfigError(f"{path}: no such job file")
    if "path" in data:
        fields = ", ".join(name for name in JobConfig.model_fields if name != "path")
        raise ConfigError(f"{path}: path: unknown field; allowed fields: {fields}")
    try:
        config = JobConfig.model_validate(data)
    except ValidationError as exc:
        raise config_error(str(path), exc, JobConfig) from None
    base = path.resolve().parent
    inbox = (base / config.job.inbox.expanduser()).resolve()
    outbox = (base / config.job.outbox.expanduser()).resolve()
    if outbox.is_relative_to(inbox):
        raise ConfigError(
            f"{path}: job.outbox = {str(outbox)!r} is inside job.inbox = {str(inbox)!r}:"
            " its folders would be taken for subjects; put them side by side"
        )
    job = config.job.model_copy(update={"inbox": inbox, "outbox": outbox})
    generation, refs = job_paths_resolved(config.generation.model_dump(), base, str(path))
    # Checked now, so a bad picture stops the job before anything is paid; each subject
    # reads it again when it is taken in, and keeps what it read.
    read_init_images((ref.path for ref in refs), refs, inbox=inbox, fallback=str(path))
    return config.model_copy(update={
        "job": job, "path": path.resolve(),
        "generation": GenerationSection.model_validate(generation),
    })


def load_subject_overrides(folder: Path) -> SubjectOverrides:
    """Read ``<folder>/subject.toml``; no file means no overrides.

    The file is inbox input: it is read only when it is a regular file of at most
    ``MAX_SUBJECT_FILE_BYTES`` inside the inbox (``folder``'s parent), never blocking, and
    from the inbox down with no link followed on the way (as caption files are); a FIFO, a
    device or a link out of the inbox is a ConfigError naming it.
    """
    return _subject_overrides(folder)[0]


def _subject_overrides(folder: Path) -> tuple[SubjectOverrides, bool]:
    """The overrides, and whether a subject.toml was there."""
    file = folder / SUBJECT_FILE
    advice = f"replace it with a plain text file (at most {size_text(MAX_SUBJECT_FILE_BYTES)})"
    data = _read_toml(file, lambda: _read_subject_file(file, folder.parent), advice=advice)
    if data is None:
        return SubjectOverrides(), False
    try:
        return SubjectOverrides.model_validate(data), True
    except ValidationError as exc:
        raise config_error(str(file), exc, SubjectOverrides) from None


def _read_subject_file(file: Path, inbox: Path) -> bytes:
    """The bytes of a subject's ``subject.toml``, read beneath ``inbox``.

    A link (the file's, or a subject folder's) is looked through only to where it leads
    inside the inbox; that place is then read from the inbox down without following any
    link, so a folder swapped for a link between the look and the read is refused.
    """
    target = Path(os.path.realpath(file))
    if not target.is_relative_to(os.path.realpath(inbox)):
        where = "is a link that points" if os.path.islink(file) else "is"
        raise RefusedFile(file, f"{where} outside the inbox")
    try:
        return read_beneath(inbox, target, limit=MAX_SUBJECT_FILE_BYTES)
    except RefusedFile as exc:
        raise RefusedFile(file, exc.problem) from exc  # named as the subject has it


def render_prompts(
    training: TrainingSection, generation: GenerationSection, subject: str,
    images: Mapping[str, InitImage] | None = None,
) -> list[RenderedPrompt]:
    """Every prompt then extra prompt of ``generation``, rendered for ``subject``; an
    img2img prompt's init image is found in ``images`` (by its path, as read by
    :func:`~.init_refs.read_init_images`)."""
    values = _template_values(training, subject)
    rendered = []
    for index, entry in enumerate(generation.entries(), start=1):
        template = entry.prompt
        prompt = RenderedPrompt(index, template, fill_template(template, values),
                                prompt_slug(index, template))
        if entry.init_image is not None:
            image = (images or {}).get(entry.init_image)
            if image is None:
                raise ConfigError(f"{entry.init_image}: the init image was not read")
            prompt = dataclasses.replace(prompt, init_image=entry.init_image,
                                         init_sha256=image.sha256,
                                         strength=entry.init_strength)
        rendered.append(prompt)
    return rendered


def _template_values(training: TrainingSection, subject: str) -> dict[str, str]:
    instance = fill_template(
        training.instance_prompt, {"subject": subject, "class_word": training.class_word}
    )
    return {"instance_prompt": instance, "subject": subject, "class_word": training.class_word}


def _render_problems(
    training: TrainingSection, generation: GenerationSection, subject: str
) -> list[str]:
    try:
        values = _template_values(training, subject)
    except TemplateError as exc:
        return [f"training.instance_prompt: {exc}"]
    texts = [("training.instance_prompt", values["instance_prompt"])]
    texts += [(f"generation.prompts[{i}]", fill_template(as_table(entry).prompt, values))
              for i, entry in enumerate(generation.prompts)]
    texts += [(f"generation.extra_prompts[{i}]", fill_template(as_table(entry).prompt, values))
              for i, entry in enumerate(generation.extra_prompts)]
    problems = []
    for field, text in texts:
        if len(text) > MAX_TEXT_LENGTH:
            problems.append(
                f"{field}: renders to {len(text)} characters for subject {subject!r},"
                f" at most {MAX_TEXT_LENGTH} allowed"
            )
        elif not text.strip():
            problems.append(f"{field}: renders to blank text for subject {subject!r}")
    return problems


def _family_problems(training: TrainingSection, generation: GenerationSection) -> list[str]:
    checkpoint = generation.model_name.removesuffix(".safetensors")
    if checkpoint not in BASE_MODELS:
        return []  # a checkpoint we do not know: the API will judge
    families = {True: "SDXL", False: "SD 1.5"}
    lora_family = families[training.base_model in SDXL_BASE_MODELS]
    checkpoint_family = families[checkpoint in SDXL_BASE_MODELS]
    if lora_family == checkpoint_family:
        return []
    return [
        f"generation.model_name = {generation.model_name!r} is an {checkpoint_family}"
        f" checkpoint but training.base_model = {training.base_model!r} is {lora_family}:"
        " a LoRA works only with checkpoints of its own family"
    ]


def _read_toml(path: Path, read: Callable[[], bytes], *, advice: str) -> dict[str, Any] | None:
    """The parsed file, or None when it does not exist. ``read()`` gives its bytes, read as
    an inbox file is (never blocking, regular files only, up to a cap, links only to inside
    a root); ``advice`` ends the message when the file is refused."""
    try:
        return tomllib.loads(read().decode("utf-8"))
    except RefusedFile as exc:
        raise ConfigError(f"{path} {exc.problem}: {advice}") from exc
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: TOML syntax error: {exc}") from exc
