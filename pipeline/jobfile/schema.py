"""The sections of a job file and of a ``subject.toml``, validated with pydantic.

A job file has ``[job]``, ``[training]``, ``[generation]`` and the optional ``[photos]`` and
``[on_complete]`` (see ``jobs/README.md``); ``[prices]`` and ``[max_spend]`` are in
:mod:`pipeline.jobfile.spending`. Each field is checked against the hosted API's contract
(:mod:`pipeline.api.contract`) when the file is loaded, so a typo or an out-of-range value is
a load error naming the field, never a 400 after a paid training. The training's knobs are
the API model's own (:class:`pipeline.api.models.TrainingKnobs`), and a ``subject.toml``'s
sections are made from the job file's, so each field is written once. Loading, merging a
subject's overrides and rendering prompts live in :mod:`pipeline.jobfile.loading`.

Templates (``instance_prompt``, ``prompts``, ``extra_prompts``) may use ``{instance_prompt}``,
``{subject}`` and ``{class_word}``; ``{{`` and ``}}`` stand for literal braces. They are
checked and rendered by :mod:`pipeline.jobfile.templates`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Final, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from ..api.contract import (
    BASE_MODELS,
    COMPONENT_NAMES,
    LR_SCHEDULERS,
    MAX_IMAGE_NUM,
    MAX_SIDE,
    MAX_TEXT_LENGTH,
    MAX_TRAINING_IMAGES,
    MIN_SIDE,
    RECOMMENDED_TRAINING_IMAGES,
    SAMPLERS,
)
from ..api.models import (
    BatchSize,
    LearningRate,
    OneOf,
    SchedulerName,
    TrainingKnobs,
    TrainSteps,
    WarmupSteps,
)
from ..errors import ConfigError
from ..inputs.photo_checks import RECOMMENDED_FACE_PHOTOS, PhotoSettings
from .prompts import ImagePrompt, PromptEntry, as_table
from .templates import (
    TemplateError,
    check_instance_template,
    fill_template,
)

MAX_PROMPTS: Final = 100
#: Arguments of each preprocessing component, all required (section 3 of the API notes).
COMPONENT_ARGS: Final = {
    "face_crop_region": frozenset({"ratio"}),
    "resize": frozenset({"width", "height"}),
    "face_restore": frozenset({"method", "upscale"}),
}
_WARMUP_SCHEDULERS: Final = LR_SCHEDULERS - {"constant"}


def _slug(value: str) -> str:
    if not value or len(value) > 64 or not all(c.isascii() and (c.isalnum() or c in "-_")
                                               for c in value):
        raise ValueError("must be 1..64 characters: letters, digits, '-' or '_'")
    return value


def _file_name(value: str) -> str:
    if value in {"", ".", ".."} or "/" in value or "\\" in value:
        raise ValueError("caption keys must be bare image file names, such as 'photo01.png'")
    return value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return value


Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_LENGTH)]
Slug = Annotated[str, AfterValidator(_slug)]
InstanceTemplate = Annotated[str, StringConstraints(min_length=1),
                             AfterValidator(check_instance_template)]
ClassWord = Annotated[str, StringConstraints(min_length=1, max_length=64)]
BaseModelName = Annotated[str, OneOf(BASE_MODELS)]
SamplerName = Annotated[str, OneOf(SAMPLERS)]
ComponentName = Annotated[str, OneOf(COMPONENT_NAMES)]
Captions = dict[Annotated[str, AfterValidator(_file_name)], Text]
TrainSide = Annotated[int, Field(ge=1)]
ModelFile = Annotated[str, StringConstraints(min_length=1, max_length=256)]
PromptList = Annotated[list[PromptEntry], Field(min_length=1, max_length=MAX_PROMPTS)]
Strength = Annotated[float, Field(ge=0, le=1)]
ImageNum = Annotated[int, Field(ge=1, le=MAX_IMAGE_NUM)]
Side = Annotated[int, Field(ge=MIN_SIDE, le=MAX_SIDE)]
Steps = Annotated[int, Field(ge=1, le=100)]
Guidance = Annotated[float, Field(ge=1, le=30)]
GenSeed = Annotated[int, Field(ge=-1)]
ClipSkip = Annotated[int, Field(ge=1, le=12)]
ImageType = Literal["png", "jpeg", "webp"]
Kind = Literal["subject", "style"]


class StrictModel(BaseModel):
    """A misspelt field is an error, and TOML's ``inf``/``nan`` are not numbers here."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class JobSection(StrictModel):
    """``[job]``: where the photos come from, where results go, and how eagerly to act."""

    name: Slug
    inbox: Path = Path("inbox")
    outbox: Path = Path("outbox")
    settle_seconds: float = Field(default=30.0, ge=0)
    require_ready_marker: bool = False
    retrain_on_change: bool = False
    max_training_retries: int = Field(default=0, ge=0, le=5)
    fetch_lora: bool = True
    max_images: int = Field(default=MAX_TRAINING_IMAGES, ge=1, le=MAX_TRAINING_IMAGES)
    min_images_warning: int = Field(
        default=RECOMMENDED_TRAINING_IMAGES, ge=0, le=MAX_TRAINING_IMAGES
    )


class Component(StrictModel):
    """One preprocessing step of the training API (``face_crop_region``, ``resize``...)."""

    name: ComponentName
    args: dict[str, str | int | float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_args(self) -> Self:
        expected = COMPONENT_ARGS[self.name]
        unknown = sorted(set(self.args) - expected)
        missing = sorted(expected - set(self.args))
        if unknown or missing:
            raise ValueError(
                f"component {self.name!r} takes args {', '.join(sorted(expected))}"
                + (f"; unknown: {', '.join(unknown)}" if unknown else "")
                + (f"; missing: {', '.join(missing)}" if missing else "")
            )
        return self

    def to_api(self) -> dict[str, Any]:
        """The API's shape: every argument value as a string.

        >>> Component(name="resize", args={"width": 512, "height": 512}).to_api()
        {'name': 'resize', 'args': [{'name': 'width', 'value': '512'}, {'name': 'height', 'value': '512'}]}
        """  # noqa: E501
        args = [{"name": key, "value": str(value)} for key, value in self.args.items()]
        return {"name": self.name, "args": args}


def default_components() -> list[Component]:
    """The official SDK's default preprocessing: crop around the face, resize, restore."""
    return [
        Component(name="face_crop_region", args={"ratio": 1.4}),
        Component(name="resize", args={"width": 512, "height": 512}),
        Component(name="face_restore", args={"method": "gfpgan_1.4", "upscale": 1.0}),
    ]


class _TrainingBasics(StrictModel):
    """The first fields of ``[training]``: the kind of training, its base and its prompts."""

    kind: Kind = "subject"
    base_model: BaseModelName = "v1-5-pruned-emaonly"
    width: TrainSide = 512
    height: TrainSide = 512
    instance_prompt: InstanceTemplate = "a close photo of ohwx {class_word}"
    class_prompt: Text = "person"
    class_word: ClassWord = "person"


class TrainingSection(TrainingKnobs, _TrainingBasics):
    """``[training]``: what the training API is asked to do.

    Its fields are the basics above, then the API's knobs (:class:`TrainingKnobs`, with
    their limits: ``max_train_steps`` to ``lora_text_encoder_alpha``), then the
    preprocessing, in that order. Five knobs get the job file's defaults here; the rest stay
    unset unless the file sets them, and unset ones are not sent.

    For ``kind = "style"`` the API needs a caption per image instead of an instance prompt:
    :meth:`expert_setting` then leaves ``instance_prompt`` and ``class_prompt`` out (the
    rendered ``instance_prompt`` still fills ``{instance_prompt}`` in the prompts).
    """

    max_train_steps: TrainSteps = 500
    learning_rate: LearningRate = 1e-4
    lr_scheduler: SchedulerName = "constant"
    lr_warmup_steps: WarmupSteps = 0
    train_batch_size: BatchSize = 1
    components: list[Component] = Field(default_factory=default_components)
    captions: Captions = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.lr_warmup_steps and self.lr_scheduler not in _WARMUP_SCHEDULERS:
            raise ValueError(
                f"lr_warmup_steps has no effect with lr_scheduler {self.lr_scheduler!r}:"
                f" use one of {', '.join(sorted(_WARMUP_SCHEDULERS))}, or set it to 0"
            )
        names = [component.name for component in self.components]
        if len(names) != len(set(names)):
            raise ValueError(f"components: each name at most once, got {names}")
        return self

    def render_instance_prompt(self, subject: str) -> str:
        """The instance prompt with ``{subject}`` and ``{class_word}`` filled in."""
        values = {"subject": subject, "class_word": self.class_word}
        try:
            return fill_template(self.instance_prompt, values)
        except TemplateError as exc:
            raise ConfigError(str(exc)) from None

    def expert_setting(self, subject: str) -> dict[str, Any]:
        """The API's ``expert_setting`` object for ``subject``; unset (None) fields left out.

        Subject trainings get the rendered ``instance_prompt`` and the ``class_prompt``; style
        trainings do not (the API needs them for subjects only; styles learn from captions).
        """
        setting: dict[str, Any] = {}
        if self.kind == "subject":
            setting["instance_prompt"] = self.render_instance_prompt(subject)
            setting["class_prompt"] = self.class_prompt
        setting.update(self.model_dump(include=set(TrainingKnobs.model_fields), exclude_none=True))
        return setting

    def components_api(self) -> list[dict[str, Any]]:
        """``components`` in the API's shape."""
        return [component.to_api() for component in self.components]


class GenerationSection(StrictModel):
    """``[generation]``: the requests made with the trained LoRA, one per prompt: txt2img,
    or img2img for a prompt that names an ``init_image`` (see :mod:`.prompts`)."""

    model_name: ModelFile = "realisticVisionV51_v51VAE_94301.safetensors"
    prompts: PromptList
    extra_prompts: list[PromptEntry] = Field(default_factory=list)
    negative_prompt: Text | None = None
    lora_strength: Strength = 0.8
    image_num: ImageNum = 1
    width: Side = 512
    height: Side = 512
    steps: Steps = 20
    guidance_scale: Guidance = 7.5
    sampler_name: SamplerName = "Euler a"
    seed: GenSeed = -1
    clip_skip: ClipSkip | None = None
    response_image_type: ImageType = "png"

    @model_validator(mode="after")
    def _not_too_many(self) -> Self:
        total = len(self.prompts) + len(self.extra_prompts)
        if total > MAX_PROMPTS:
            raise ValueError(
                f"prompts + extra_prompts: {total} prompts, at most {MAX_PROMPTS} allowed"
            )
        return self

    def all_prompts(self) -> list[str]:
        """``prompts`` then ``extra_prompts``, as templates."""
        return [entry.prompt for entry in self.entries()]

    def entries(self) -> list[ImagePrompt]:
        """``prompts`` then ``extra_prompts``, each as a table (its init image, if any)."""
        return [as_table(entry) for entry in (*self.prompts, *self.extra_prompts)]


class PhotosSection(StrictModel):
    """``[photos]``: how the photo gate judges each photo before anything is paid for.

    The defaults follow the service's guide (one face, centred, clear, at least 10 good
    face photos) and pass sharp, well-lit phone and camera photos; see ``jobs/README.md``.
    """

    faces: Literal["auto", "require", "off"] = "auto"
    min_face_photos: int = Field(default=RECOMMENDED_FACE_PHOTOS, ge=0, le=MAX_TRAINING_IMAGES)
    too_few_face_photos: Literal["warn", "hold"] = "warn"
    min_sharpness: float = Field(default=35.0, ge=0)
    soft_sharpness: float = Field(default=80.0, ge=0)
    dark: float = Field(default=40.0, ge=0, le=255)
    bright: float = Field(default=215.0, ge=0, le=255)
    min_face_share: float = Field(default=0.12, ge=0, le=1)
    max_centre_offset: float = Field(default=0.25, ge=0, le=0.5)
    near_duplicate_bits: int = Field(default=10, ge=0, le=32)
    animated: Literal["refuse", "first_frame"] = "refuse"
    keep_metadata: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.soft_sharpness < self.min_sharpness:
            raise ValueError(
                f"soft_sharpness ({self.soft_sharpness:g}) is below min_sharpness "
                f"({self.min_sharpness:g}): a soft photo warns above the refusal line; "
                "raise soft_sharpness or lower min_sharpness"
            )
        if self.bright <= self.dark:
            raise ValueError(
                f"bright ({self.bright:g}) must be above dark ({self.dark:g})"
            )
        return self

    def settings(self, training_size: tuple[int, int]) -> PhotoSettings:
        """These thresholds as the photo gate takes them."""
        return PhotoSettings(training_size=training_size, **self.model_dump())


class NotifySection(StrictModel):
    """``[on_complete]``: who to tell when a run finishes (a webhook, a command, or both)."""

    webhook: Annotated[str, AfterValidator(_http_url)] | None = None
    command: Annotated[list[Text], Field(min_length=1)] | Text | None = None
    timeout_seconds: float = Field(default=10.0, gt=0)
    retries: int = Field(default=3, ge=0, le=10)

    @field_validator("command", mode="before")
    @classmethod
    def _command_shape(cls, value: object) -> object:
        # Checked here so that a bad command gives one message, not one per union member.
        if value is None or (isinstance(value, str) and value.strip()):
            return value
        if isinstance(value, list) and value and all(isinstance(a, str) and a for a in value):
            return value
        raise ValueError("must be a command line string or a non-empty list of arguments")

    @model_validator(mode="after")
    def _has_target(self) -> Self:
        if self.webhook is None and self.command is None:
            raise ValueError("on_complete needs a webhook, a command, or both")
        return self


def _all_optional(section: type[BaseModel]) -> dict[str, Any]:
    """``section``'s fields for :func:`pydantic.create_model`, in its order, each optional
    and unset by default, with its type and limits: what a ``subject.toml`` may override."""
    return {name: (_optional(info), None) for name, info in section.model_fields.items()}


def _optional(info: FieldInfo) -> Any:
    # Pydantic keeps a field's limits (ge=, a validator) apart from its type: put them back.
    kind: Any = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    return kind | None


# Made from the sections, so a field added there can be overridden at once, with its checks.
TrainingOverrides = create_model(
    "TrainingOverrides",
    __base__=StrictModel,
    __module__=__name__,
    __doc__="``[training]`` of a ``subject.toml``: any training field, each optional.",
    **_all_optional(TrainingSection),
)
PhotosOverrides = create_model(
    "PhotosOverrides",
    __base__=StrictModel,
    __module__=__name__,
    __doc__="``[photos]`` of a ``subject.toml``: any photo gate field, each optional.",
    **_all_optional(PhotosSection),
)
GenerationOverrides = create_model(
    "GenerationOverrides",
    __base__=StrictModel,
    __module__=__name__,
    __doc__="``[generation]`` of a ``subject.toml``: any generation field, each optional.",
    **_all_optional(GenerationSection),
)


class SubjectOverrides(StrictModel):
    """A ``subject.toml``: per-subject changes to the job.

    Fields given here replace the job's; ``extra_prompts`` are added after the job's prompts;
    ``captions`` merge with the job's (the subject's win). The top-level ``class_word``,
    ``extra_prompts`` and ``captions`` are shorthands for the same fields in the tables.
    """

    class_word: ClassWord | None = None
    extra_prompts: list[PromptEntry] = Field(default_factory=list)
    captions: Captions = Field(default_factory=dict)
    training: TrainingOverrides = Field(default_factory=TrainingOverrides)
    generation: GenerationOverrides = Field(default_factory=GenerationOverrides)
    photos: PhotosOverrides = Field(default_factory=PhotosOverrides)

    @model_validator(mode="after")
    def _one_class_word(self) -> Self:
        # The override models are made by create_model: their fields are read from a dump.
        nested = self.training.model_dump(exclude_unset=True).get("class_word")
        if self.class_word is not None and nested is not None and nested != self.class_word:
            raise ValueError(
                f"class_word is set twice ({self.class_word!r} and training.class_word"
                f" {nested!r}): keep one"
            )
        return self

    def training_updates(self) -> dict[str, Any]:
        """Training fields to replace (captions excluded: they merge)."""
        updates = self.training.model_dump(exclude_unset=True, exclude={"captions"})
        if self.class_word is not None:
            updates["class_word"] = self.class_word
        return updates

    def all_captions(self) -> dict[str, str]:
        """``[training] captions`` then the top-level ``captions`` (the latter win)."""
        return {**self.training.model_dump(exclude_unset=True).get("captions", {}),
                **self.captions}

    def photos_updates(self) -> dict[str, Any]:
        """Photo gate fields to replace."""
        return self.photos.model_dump(exclude_unset=True)

    def generation_updates(self) -> dict[str, Any]:
        """Generation fields to replace (``extra_prompts`` excluded: they add up)."""
        return self.generation.model_dump(exclude_unset=True, exclude={"extra_prompts"})

    def prompt_lists(self) -> list[tuple[str, list[str | dict[str, Any]]]]:
        """The prompt lists this file sets, each with its field: ``generation.prompts``
        (when it replaces the job's), ``generation.extra_prompts`` and ``extra_prompts``;
        a table as a dict."""
        given = self.generation.model_dump(exclude_unset=True)
        lists = [(f"generation.{key}", list(given[key]))
                 for key in ("prompts", "extra_prompts") if key in given]
        top = [entry if isinstance(entry, str) else entry.model_dump(exclude_unset=True)
               for entry in self.extra_prompts]
        return [*lists, ("extra_prompts", top)]

    def all_extra_prompts(self) -> list[str | dict[str, Any]]:
        """``[generation] extra_prompts`` then the top-level ``extra_prompts``, a table
        as a dict."""
        given = self.generation.model_dump(exclude_unset=True).get("extra_prompts", [])
        top = [entry if isinstance(entry, str) else entry.model_dump(exclude_unset=True)
               for entry in self.extra_prompts]
        return [*given, *top]
