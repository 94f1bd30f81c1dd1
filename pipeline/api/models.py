"""Typed requests and responses of the hosted API.

Responses are parsed defensively (see the contract, section 1): ints may come as strings,
``null`` means absent, unknown fields are ignored. Requests are strict: what we send is
what the contract documents.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from .contract import TASK_FAILED, TASK_SUCCEED, TRAINING_TERMINAL

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


class ExpertSetting(BaseModel):
    """The training's knobs; unset ones are not sent."""

    instance_prompt: str | None = None
    class_prompt: str | None = None
    train_batch_size: int | None = None
    learning_rate: float | None = None
    max_train_steps: int | None = None
    seed: int | None = None
    lr_scheduler: str | None = None
    lr_warmup_steps: int | None = None
    with_prior_preservation: bool | None = None
    prior_loss_weight: float | None = None
    train_text_encoder: bool | None = None
    lora_r: int | None = None
    lora_alpha: int | None = None
    lora_text_encoder_r: int | None = None
    lora_text_encoder_alpha: int | None = None


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
