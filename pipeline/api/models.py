"""Typed requests and responses of the hosted API.

Responses are parsed defensively (see the contract, section 1): ints may come as strings,
``null`` means absent, unknown fields are ignored. Requests are strict: what we send is
what the contract documents.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_core import CoreSchema, core_schema

from .contract import (
    LEARNING_RATES,
    LR_SCHEDULERS,
    TASK_FAILED,
    TASK_SUCCEED,
    TRAINING_TERMINAL,
)

ImageExtension = Literal["png", "jpeg", "webp"]
TrainingKind = Literal["subject", "style"]

# Strings the service sends are bounded: a longer one makes the answer a bad answer.
Id = Annotated[str, StringConstraints(max_length=256)]
Name = Annotated[str, StringConstraints(max_length=1024)]
Text = Annotated[str, StringConstraints(max_length=4096)]
Url = Annotated[str, StringConstraints(max_length=8192)]
#: An asset id is kept in the store and sent back: opaque, but plain (32 hex in practice).
AssetId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,128}$")]
#: Numbers kept in SQLite must fit its 64-bit integers.
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]


class Response(BaseModel):
    """Base of every parsed answer: lenient about extras, nulls and string numbers."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data


# --- uploads --------------------------------------------------------------------------------


class UploadTicket(Response):
    """Where and how to PUT one training image."""

    assets_id: AssetId
    upload_url: Url
    method: str = "PUT"

    @field_validator("assets_id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value


# --- training -------------------------------------------------------------------------------


class DatasetItem(BaseModel):
    assets_id: str
    caption: str | None = None


class ComponentArg(BaseModel):
    name: str
    value: str


class TrainingComponent(BaseModel):
    name: str
    args: list[ComponentArg] = []


@dataclass(frozen=True)
class OneOf:
    """``Annotated`` metadata: the value must be one of ``allowed``.

    Pydantic runs the check (a near miss of a name gets a "did you mean"); the emulator
    reads ``allowed`` to check a request body against the same set.

    >>> OneOf(frozenset({"cosine", "linear"})).problem("cosin")
    "did you mean 'cosine'? must be one of: 'cosine', 'linear'"
    """

    allowed: frozenset[str] | frozenset[float]

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def _check(self, value: Any) -> Any:
        if value not in self.allowed:
            raise ValueError(self.problem(value))
        return value

    def problem(self, value: Any) -> str:
        """Why ``value`` is refused, and what would do."""
        names = [choice for choice in self.allowed if isinstance(choice, str)]
        close = difflib.get_close_matches(value, names, n=1) if isinstance(value, str) else []
        hint = f"did you mean {close[0]!r}? " if close else ""
        shown = ", ".join(_shown(choice) for choice in sorted(self.allowed))
        return f"{hint}must be one of: {shown}"


def _shown(choice: object) -> str:
    """A choice as a job file would spell it: a quoted name, or a rate such as ``1e-4``."""
    return repr(choice) if isinstance(choice, str) else f"{choice:.0e}".replace("e-0", "e-")


# The knobs' types carry the contract's limits (section 3): a job file is checked against
# them when it is loaded, a request when it is built, and the emulator reads them back to
# check what a client sends.
TrainSteps = Annotated[int, Field(ge=1)]
LearningRate = Annotated[float, OneOf(LEARNING_RATES)]
SchedulerName = Annotated[str, OneOf(LR_SCHEDULERS)]
WarmupSteps = Annotated[int, Field(ge=0)]
BatchSize = Annotated[int, Field(ge=1, le=4)]
TrainSeed = Annotated[int, Field(ge=1)]
LossWeight = Annotated[float, Field(gt=0)]
LoraRank = Annotated[int, Field(ge=4, le=128)]


class TrainingKnobs(BaseModel):
    """The knobs of a training's ``expert_setting``, each with its limits; unset ones are
    not sent.

    The one list of them: :class:`ExpertSetting` sends them, a job file's ``[training]``
    (:class:`pipeline.jobfile.schema.TrainingSection`) inherits them, and the emulator checks
    a request's against them. Their order is the job file's (its error messages list the
    fields in this order).
    """

    max_train_steps: TrainSteps | None = None
    learning_rate: LearningRate | None = None
    lr_scheduler: SchedulerName | None = None
    lr_warmup_steps: WarmupSteps | None = None
    train_batch_size: BatchSize | None = None
    seed: TrainSeed | None = None
    with_prior_preservation: bool | None = None
    prior_loss_weight: LossWeight | None = None
    train_text_encoder: bool | None = None
    lora_r: LoraRank | None = None
    lora_alpha: LoraRank | None = None
    lora_text_encoder_r: LoraRank | None = None
    lora_text_encoder_alpha: LoraRank | None = None


class ExpertSetting(TrainingKnobs):
    """The training's ``expert_setting``: the knobs, and the prompts a subject training
    needs (rendered: their length is the service's to judge)."""

    instance_prompt: str | None = None
    class_prompt: str | None = None


class TrainingRequest(BaseModel):
    """Body of ``POST /v3/training/subject`` and ``/v3/training/style``."""

    name: str
    base_model: str
    width: int = 512
    height: int = 512
    image_dataset_items: list[DatasetItem]
    components: list[TrainingComponent] = []
    expert_setting: ExpertSetting = Field(default_factory=ExpertSetting)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class TaskCreated(Response):
    task_id: Id


class ModelRef(Response):
    model_name: Name
    model_status: Id = "DEPLOYING"


class TrainingExtra(Response):
    eta_relative: Int64 | None = None
    progress_percent: int | None = None

    @field_validator("progress_percent")
    @classmethod
    def _percent(cls, value: int | None) -> int | None:
        return None if value is None else min(100, max(0, value))


class TrainingStatus(Response):
    """Answer of the training status call."""

    task_id: Id = ""
    task_status: Id = "UNKNOWN"
    model_type: Id = ""
    models: list[ModelRef] = []
    extra: TrainingExtra = Field(default_factory=TrainingExtra)
    #: Not in the documented shape; kept when the service explains a failure.
    reason: Text = ""

    @property
    def terminal(self) -> bool:
        return self.task_status in TRAINING_TERMINAL

    @property
    def serving_model(self) -> str | None:
        """The LoRA's model name once it can be used: task SUCCESS and model SERVING."""
        if self.task_status != "SUCCESS":
            return None
        for model in self.models:
            if model.model_status == "SERVING":
                return model.model_name
        return None


class TrainingTask(Response):
    """One row of the task list."""

    task_name: Name = ""
    task_id: Id
    task_type: Id = ""
    task_status: Id = "UNKNOWN"
    created_at: int | None = None
    models: list[ModelRef] = []
    reason: Text = ""

    def as_status(self) -> TrainingStatus:
        return TrainingStatus(
            task_id=self.task_id, task_status=self.task_status, models=self.models,
            reason=self.reason,
        )


class Pagination(Response):
    next_cursor: Text = ""


class Page(Response):
    """A page of a cursor-paginated list."""

    pagination: Pagination = Field(default_factory=Pagination)


class TaskPage(Page):
    tasks: list[TrainingTask] = []


class ModelType(Response):
    name: str = ""
    display_name: str = ""


class PrivateModel(Response):
    """A trained model in the private model list."""

    id: int
    name: Name = ""
    hash_sha256: Id = ""
    sd_name: Name = ""
    sd_name_in_api: Name = ""
    type: ModelType = Field(default_factory=ModelType)
    status: int = 0
    download_url: Url = ""
    download_url_ttl: int = 0
    source: str = ""
    base_model: str = ""
    is_sdxl: bool = False

    @property
    def api_name(self) -> str:
        """The name to put in ``loras[].model_name``."""
        return self.sd_name_in_api or self.sd_name


class ModelPage(Page):
    models: list[PrivateModel] = []


# --- generation -----------------------------------------------------------------------------


class LoraRef(BaseModel):
    model_name: str
    strength: float = 1.0


class Txt2ImgRequest(BaseModel):
    """``request`` of ``POST /v3/async/txt2img`` (SDK defaults)."""

    model_name: str
    prompt: str
    negative_prompt: str | None = None
    width: int = 512
    height: int = 512
    image_num: int = 1
    steps: int = 20
    guidance_scale: float = 7.5
    sampler_name: str = "Euler a"
    seed: int = -1
    clip_skip: int | None = None
    sd_vae: str | None = None
    loras: list[LoraRef] = []


class Img2ImgRequest(Txt2ImgRequest):
    """``request`` of ``POST /v3/async/img2img``."""

    image_base64: str
    strength: float = 0.5


class Webhook(BaseModel):
    url: str
    test_mode: dict[str, Any] | None = None


class GenerationExtra(BaseModel):
    response_image_type: ImageExtension = "png"
    enable_nsfw_detection: bool | None = None
    webhook: Webhook | None = None


class DebugInfo(Response):
    submit_time_ms: int | None = None
    execute_time_ms: int | None = None
    complete_time_ms: int | None = None


class ResultExtra(Response):
    seed: Int64 | None = None
    debug_info: DebugInfo | None = None


class ResultTask(Response):
    task_id: Id = ""
    task_type: Id = ""
    status: Id = "TASK_STATUS_UNKNOWN"
    reason: Text = ""
    eta: int = 0
    progress_percent: int = 0


class ResultImage(Response):
    image_url: Url
    image_url_ttl: int = 0
    image_type: Id = "png"


class GenerationResult(Response):
    """Answer of ``GET /v3/async/task-result``."""

    extra: ResultExtra = Field(default_factory=ResultExtra)
    task: ResultTask = Field(default_factory=ResultTask)
    images: list[ResultImage] = []

    @property
    def succeeded(self) -> bool:
        return self.task.status == TASK_SUCCEED

    @property
    def failed(self) -> bool:
        return self.task.status == TASK_FAILED
