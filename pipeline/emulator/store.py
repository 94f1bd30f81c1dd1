"""In-memory state of the emulated account, and the lazy clock-driven state machines.

Nothing advances by itself: a training's or a generation's status is computed from its
creation time and the emulator's clock whenever someone asks, so a test that advances a
``ManualClock`` sees every transition without sleeping.

Training:   QUEUING (queue_seconds) -> TRAINING (train_seconds, progress 0..100)
            -> SUCCESS with its model DEPLOYING (deploy_seconds) -> SERVING;
            a task fated to fail or be canceled stops part-way through TRAINING;
            a model fated to stick stays DEPLOYING.
Generation: QUEUED (generation_queue_seconds) -> PROCESSING (generation_seconds)
            -> SUCCEED, or FAILED when fated to.

Uploaded images are kept as metadata and a small thumbnail, never whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pipeline.api.contract import (
    SDXL_BASE_MODELS,
    TASK_FAILED,
    TASK_PROCESSING,
    TASK_QUEUED,
    TASK_SUCCEED,
)

from .config import EmulatorConfig


@dataclass
class Asset:
    """One upload slot (``assets_id``) and, once PUT, what was received."""

    assets_id: str
    extension: str
    issued_at: float
    uploaded: bool = False
    size: int = 0
    sha256: str = ""
    width: int = 0
    height: int = 0
    thumbnail: bytes = b""  # small JPEG, at most THUMBNAIL_SIDE px


@dataclass
class TrainingSpec:
    """A validated training request."""

    kind: str  # "subject" | "style"
    name: str
    base_model: str
    width: int
    height: int
    assets_ids: list[str]
    captions: list[str | None]
    instance_prompt: str | None
    class_prompt: str | None
    lora_r: int
    train_seed: int | None


@dataclass
class Training:
    """A training task, its fate (decided at creation) and any forced state."""

    task_id: str
    spec: TrainingSpec
    created_at: float
    sequence: int
    model_id: int
    model_name: str
    fate: str = "success"  # "success" | "failed" | "canceled"
    stop_fraction: float = 0.5  # how far into TRAINING a failed/canceled task stops
    stuck_deploying: bool = False
    reason: str = ""
    forced_status: str | None = None
    forced_model_status: str | None = None
    file_sha256: str | None = None  # cached hash of the generated .safetensors

    @property
    def is_sdxl(self) -> bool:
        """Whether the LoRA belongs to the SDXL family."""
        return self.spec.base_model in SDXL_BASE_MODELS


@dataclass(frozen=True)
class TrainingView:
    """A training as seen at one instant."""

    status: str
    model_status: str | None  # None until SUCCESS
    progress_percent: int
    eta_relative: int
    reason: str

    @property
    def serving(self) -> bool:
        """SUCCESS and the model SERVING: the LoRA can be used."""
        return self.status == "SUCCESS" and self.model_status == "SERVING"


def training_view(training: Training, config: EmulatorConfig, now: float) -> TrainingView:
    """Where ``training`` stands at ``now``."""
    queue, train, deploy = config.queue_seconds, config.train_seconds, config.deploy_seconds
    elapsed = now - training.created_at
    if training.forced_status is not None:
        status = training.forced_status
        model_status = (training.forced_model_status or "SERVING") if status == "SUCCESS" else None
        progress = 100 if status == "SUCCESS" else 0
        return TrainingView(status, model_status, progress, 0, training.reason)
    if elapsed < queue:
        return TrainingView("QUEUING", None, 0, math.ceil(queue + train - elapsed), "")
    done = (elapsed - queue) / train if train > 0 else 1.0
    if training.fate != "success" and done >= training.stop_fraction:
        progress = int(100 * training.stop_fraction)
        return TrainingView(training.fate.upper(), None, progress, 0, training.reason)
    if done < 1.0:
        eta = math.ceil(queue + train - elapsed)
        return TrainingView("TRAINING", None, min(99, int(100 * done)), eta, "")
    deployed = not training.stuck_deploying and elapsed >= queue + train + deploy
    return TrainingView("SUCCESS", "SERVING" if deployed else "DEPLOYING", 100, 0, "")


@dataclass
class LoraUse:
    """One LoRA of a generation request, resolved to its training."""

    model_name: str
    strength: float
    task_id: str


@dataclass
class GenerationSpec:
    """A validated txt2img or img2img request."""

    kind: str  # "txt2img" | "img2img"
    model_name: str
    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    image_num: int
    steps: int
    guidance_scale: float
    sampler_name: str
    seed: int
    loras: list[LoraUse]
    image_type: str
    strength: float | None = None
    init_thumbnail: bytes | None = None
    init_backdrop: bytes | None = None  # img2img: what its pictures are drawn over
    webhook_url: str | None = None


@dataclass
class Generation:
    """A generation task and its fate."""

    task_id: str
    spec: GenerationSpec
    seed: int  # resolved: never -1
    created_at: float
    base_url: str  # where the task was created, for webhook payload URLs
    fails: bool = False
    reason: str = ""
    counted: bool = False  # images_generated already incremented
    webhook_sent: bool = False

    @property
    def task_type(self) -> str:
        """``TXT_TO_IMG`` or ``IMG_TO_IMG``."""
        return "TXT_TO_IMG" if self.spec.kind == "txt2img" else "IMG_TO_IMG"


@dataclass(frozen=True)
class GenerationView:
    """A generation as seen at one instant."""

    status: str
    progress_percent: int
    eta: int
    reason: str

    @property
    def terminal(self) -> bool:
        """SUCCEED or FAILED."""
        return self.status in (TASK_SUCCEED, TASK_FAILED)


def generation_times(generation: Generation, config: EmulatorConfig) -> tuple[float, float]:
    """When processing starts and when the task ends."""
    start = generation.created_at + config.generation_queue_seconds
    return start, start + config.generation_seconds


def generation_view(generation: Generation, config: EmulatorConfig, now: float) -> GenerationView:
    """Where ``generation`` stands at ``now``."""
    start, end = generation_times(generation, config)
    if now < start:
        return GenerationView(TASK_QUEUED, 0, math.ceil(end - now), "")
    if now < end:
        progress = int(100 * (now - start) / (end - start))
        return GenerationView(TASK_PROCESSING, progress, math.ceil(end - now), "")
    if generation.fails:
        return GenerationView(TASK_FAILED, 0, 0, generation.reason)
    return GenerationView(TASK_SUCCEED, 100, 0, "")


@dataclass
class Store:
    """Everything the emulated account holds."""

    assets: dict[str, Asset] = field(default_factory=dict)
    trainings: dict[str, Training] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)  # model file name -> task_id
    generations: dict[str, Generation] = field(default_factory=dict)
    next_sequence: int = 0
    next_model_id: int = 114600

    def newest_trainings(self) -> list[Training]:
        """Every training, newest first."""
        return sorted(self.trainings.values(), key=lambda t: t.sequence, reverse=True)
