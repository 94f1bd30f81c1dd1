"""The :class:`Emulator`: config, clock, account state, counters and the operations on them.

Handlers stay thin: they parse and answer; the Emulator decides fates, names, seeds and
states. Tests can drive it directly (``emulator.trainings``, ``force_training_status``).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import secrets
import uuid
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from pipeline.api.contract import MODEL_STATUSES, TRAINING_STATUSES
from pipeline.clock import Clock, SystemClock

from .config import EmulatorConfig
from .counters import Counters
from .ratelimit import RateLimiter
from .safetensors import build_lora_file, hash_prefix
from .signing import UrlSigner
from .store import (
    Asset,
    Generation,
    GenerationSpec,
    GenerationView,
    Store,
    Training,
    TrainingSpec,
    TrainingView,
    generation_view,
    training_view,
)
from .webhooks import WebhookSender

_FAILURE_REASONS = (
    "training failed: CUDA out of memory (emulated)",
    "training failed: dataset preprocessing found no usable face (emulated)",
    "training failed: internal worker error (emulated)",
)
_CANCEL_REASON = "training canceled by the service (emulated)"
_GENERATION_FAILURE = "emulated generation failure: worker crashed"


class Emulator:
    """The state of one emulated account, driven by ``clock``.

    >>> from pipeline.clock import ManualClock
    >>> emulator = Emulator(EmulatorConfig(train_seconds=60), ManualClock())
    >>> app = create_app(emulator)  # from .routes: an aiohttp.web.Application serving it
    """

    def __init__(self, config: EmulatorConfig | None = None, clock: Clock | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.clock: Clock = clock or SystemClock()
        self.counters = Counters()
        self.store = Store()
        seed = self.config.seed
        self._rng = random.Random(seed)
        self.fault_rng = random.Random(None if seed is None else f"faults-{seed}")
        self.signer = UrlSigner(secrets.token_bytes(32))
        self.limiter = RateLimiter()
        self.webhooks = WebhookSender(self)
        self._tasks: set[asyncio.Task[None]] = set()

    # -- views for tests and inspection -------------------------------------------------

    @property
    def trainings(self) -> dict[str, Training]:
        """Every training task by id."""
        return self.store.trainings

    @property
    def generations(self) -> dict[str, Generation]:
        """Every generation task by id."""
        return self.store.generations

    @property
    def assets(self) -> dict[str, Asset]:
        """Every upload slot by ``assets_id``."""
        return self.store.assets

    def counters_snapshot(self) -> dict[str, Any]:
        """The counters as a JSON-able dict."""
        return self.counters.snapshot()

    def reset(self) -> None:
        """Forget every asset, task, grant and counter (the clock and config stay)."""
        self.store = Store()
        self.counters = Counters()
        self.limiter.reset()
        for task in self._tasks:
            task.cancel()

    def force_training_status(
        self, task_id: str, status: str, reason: str = "", *, model_status: str | None = None
    ) -> None:
        """Pin a training to ``status`` (and its model to ``model_status`` when SUCCESS).

        ``force_training_status(tid, "FAILED", "out of memory")`` fails it now;
        ``force_training_status(tid, "SUCCESS", model_status="DEPLOYING")`` leaves it deploying.
        """
        if status not in TRAINING_STATUSES:
            raise ValueError(f"unknown training status {status!r}")
        if model_status is not None and model_status not in MODEL_STATUSES:
            raise ValueError(f"unknown model status {model_status!r}")
        training = self.store.trainings[task_id]
        training.forced_status = status
        training.forced_model_status = model_status
        training.reason = reason

    # -- ids and randomness ---------------------------------------------------------------

    def new_uuid(self) -> str:
        """A random (seeded when ``config.seed`` is set) UUID4 string."""
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    # -- assets ---------------------------------------------------------------------------

    def issue_asset(self, extension: str) -> Asset:
        """A new upload slot."""
        asset = Asset(uuid.UUID(self.new_uuid()).hex, extension, self.clock.now())
        self.store.assets[asset.assets_id] = asset
        self.counters.upload_urls_issued += 1
        return asset

    # -- trainings ------------------------------------------------------------------------

    def create_training(self, spec: TrainingSpec) -> Training:
        """Record a new training and decide its fate from the fault odds."""
        config, now = self.config, self.clock.now()
        task_id = self.new_uuid()
        done_at = now + config.queue_seconds + config.train_seconds
        tag = hashlib.sha256(task_id.encode()).hexdigest()[:10].upper()
        store = self.store
        training = Training(
            task_id=task_id,
            spec=spec,
            created_at=now,
            sequence=store.next_sequence,
            model_id=store.next_model_id,
            model_name=f"model_{int(done_at)}_{tag}.safetensors",
            stop_fraction=self._rng.uniform(0.1, 0.9),
        )
        store.next_sequence += 1
        store.next_model_id += 1
        roll = self._rng.random()
        if roll < config.fault_training_failed:
            training.fate, training.reason = "failed", self._rng.choice(_FAILURE_REASONS)
            self.counters.faults_injected["training_failed"] += 1
        elif roll < config.fault_training_failed + config.fault_training_canceled:
            training.fate, training.reason = "canceled", _CANCEL_REASON
            self.counters.faults_injected["training_canceled"] += 1
        elif self._rng.random() < config.fault_stuck_deploying:
            training.stuck_deploying = True
            self.counters.faults_injected["stuck_deploying"] += 1
        store.trainings[task_id] = training
        store.models[training.model_name] = task_id
        self.counters.trainings_created["total"] += 1
        self.counters.trainings_created[spec.kind] += 1
        return training

    def training_view(self, training: Training) -> TrainingView:
        """Where ``training`` stands now."""
        return training_view(training, self.config, self.clock.now())

    def lookup_lora(self, model_name: str) -> tuple[Training, TrainingView] | None:
        """The training that produced ``model_name`` (``.safetensors`` optional), if any."""
        task_id = self.store.models.get(model_name) or self.store.models.get(
            model_name + ".safetensors"
        )
        if task_id is None:
            return None
        training = self.store.trainings[task_id]
        return training, self.training_view(training)

    def lora_file(self, training: Training) -> bytes:
        """The trained model's ``.safetensors`` bytes (rebuilt on each call)."""
        return build_lora_file(
            training.task_id, training.spec.lora_r, training.is_sdxl, training.model_name
        )

    def model_hash(self, training: Training) -> str:
        """``hash_sha256`` of the trained model: 10 upper-case hex digits."""
        if training.file_sha256 is None:
            training.file_sha256 = hash_prefix(self.lora_file(training))
        return training.file_sha256

    # -- generations ----------------------------------------------------------------------

    def create_generation(self, spec: GenerationSpec, base_url: str) -> Generation:
        """Record a new generation task, pick its seed and fate, schedule its webhook."""
        seed = spec.seed if spec.seed >= 0 else self._rng.randint(0, 2**32 - 1)
        generation = Generation(
            task_id=self.new_uuid(),
            spec=spec,
            seed=seed,
            created_at=self.clock.now(),
            base_url=base_url,
        )
        if self._rng.random() < self.config.fault_generation_failed:
            generation.fails, generation.reason = True, _GENERATION_FAILURE
            self.counters.faults_injected["generation_failed"] += 1
        self.store.generations[generation.task_id] = generation
        self.counters.generations_created["total"] += 1
        self.counters.generations_created[spec.kind] += 1
        self.counters.images_requested += spec.image_num
        if spec.webhook_url:
            self.webhooks.schedule(generation)
        return generation

    def observe_generation(self, generation: Generation) -> GenerationView:
        """Where ``generation`` stands now; counts its images once it has succeeded."""
        view = generation_view(generation, self.config, self.clock.now())
        if view.status == "TASK_STATUS_SUCCEED" and not generation.counted:
            generation.counted = True
            self.counters.images_generated += generation.spec.image_num
        return view

    # -- background work ------------------------------------------------------------------

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run ``coroutine`` in the background until done or :meth:`close`."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Cancel background work (webhooks) and release the HTTP session."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.webhooks.close()


EMULATOR_KEY = web.AppKey("emulator", Emulator)
