"""The emulator's settings: timings, URL lifetimes, limits and fault-injection odds.

Every field has a default, so ``EmulatorConfig()`` is a working, fault-free emulator whose
tasks finish in seconds. :func:`add_cli_arguments` and :func:`config_from_args` expose each
field as a command-line flag (``queue_seconds`` -> ``--queue-seconds``).
"""

from __future__ import annotations

import argparse
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, Field


class EmulatorConfig(BaseModel):
    """How the emulated service behaves. Durations are seconds on the emulator's clock."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    api_keys: list[str] = Field(
        default_factory=list, description="accepted keys; empty accepts any non-empty key"
    )

    queue_seconds: float = Field(default=2.0, ge=0, description="training time in QUEUING")
    train_seconds: float = Field(default=10.0, ge=0, description="training time in TRAINING")
    deploy_seconds: float = Field(default=3.0, ge=0, description="model DEPLOYING before SERVING")
    generation_queue_seconds: float = Field(default=0.5, ge=0, description="generation QUEUED")
    generation_seconds: float = Field(default=2.0, ge=0, description="generation PROCESSING")

    upload_url_ttl: int = Field(default=120, ge=1, description="upload URL lifetime (s)")
    image_url_ttl: int = Field(default=3600, ge=1, description="generated image URL lifetime (s)")
    download_url_ttl: int = Field(default=86400, ge=1, description="model download URL lifetime")

    latency: float = Field(default=0.0, ge=0, description="real seconds added to every request")
    upload_bandwidth: float | None = Field(
        default=None, gt=0, description="bytes/s at which upload bodies are read (None: no limit)"
    )
    max_upload_bytes: int = Field(default=32 * 1024 * 1024, ge=1, description="largest upload")

    txt2img_images_per_minute: int = Field(default=20, ge=1, description="txt2img rate limit")
    img2img_images_per_minute: int = Field(default=10, ge=1, description="img2img rate limit")
    rate_limit_retry_after: bool = Field(
        default=False, description="send Retry-After on real rate-limit 429s (undocumented)"
    )
    page_size_max: int = Field(default=100, ge=1, description="largest pagination.limit")

    fault_429: float = Field(default=0.0, ge=0, le=1, description="odds of an injected 429")
    fault_429_retry_after: float = Field(
        default=0.0, ge=0, le=1, description="share of injected 429s carrying Retry-After"
    )
    fault_5xx: float = Field(default=0.0, ge=0, le=1, description="odds of a 500/502/503/504")
    fault_drop: float = Field(default=0.0, ge=0, le=1, description="odds of a dropped connection")
    fault_slow: float = Field(default=0.0, ge=0, le=1, description="odds of a delayed answer")
    slow_seconds: float = Field(default=30.0, ge=0, description="delay of a slow answer (real s)")
    fault_training_failed: float = Field(default=0.0, ge=0, le=1, description="trainings FAILED")
    fault_training_canceled: float = Field(
        default=0.0, ge=0, le=1, description="trainings CANCELED"
    )
    fault_stuck_deploying: float = Field(
        default=0.0, ge=0, le=1, description="models that never leave DEPLOYING"
    )
    fault_generation_failed: float = Field(
        default=0.0, ge=0, le=1, description="generation tasks ending FAILED"
    )
    fault_routes: list[str] | None = Field(
        default=None,
        description="limit request faults to these routes ('POST /v3/async/txt2img' or a path)",
    )
    seed: int | None = Field(default=None, description="seed of the emulator's RNG")

    webhook_timeout: float = Field(default=5.0, gt=0, description="timeout of a webhook POST")
    webhook_retries: int = Field(default=5, ge=0, description="retries of a failed webhook")
    webhook_retry_delay: float = Field(
        default=1.0, ge=0, description="first pause between webhook retries (real s, doubling)"
    )


_LIST_FLAGS = {"api_keys": "--api-key", "fault_routes": "--fault-route"}
_METAVARS = {"api_keys": "KEY", "fault_routes": "ROUTE"}


def _flag(name: str) -> str:
    return _LIST_FLAGS.get(name, "--" + name.replace("_", "-"))


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per :class:`EmulatorConfig` field, plus ``--host`` and ``--port``.

    ``--host``/``--port`` are skipped when the parser already defines them. List fields are
    repeatable (``--api-key K1 --api-key K2``, ``--fault-route "POST /v3/async/txt2img"``);
    booleans take ``--flag/--no-flag``. Unset flags keep the config defaults.
    """
    group = parser.add_argument_group("emulator")
    for option, kwargs in (
        ("--host", {"default": "127.0.0.1", "help": "interface to listen on"}),
        ("--port", {"type": int, "default": 8080, "help": "port to listen on (0: any free)"}),
    ):
        try:
            group.add_argument(option, **kwargs)
        except argparse.ArgumentError:
            pass  # the caller defines its own
    for name, field in EmulatorConfig.model_fields.items():
        help_text = field.description or name
        if name in _LIST_FLAGS:
            group.add_argument(
                _flag(name), dest=name, action="append", default=None, help=help_text,
                metavar=_METAVARS[name],
            )
            continue
        kinds = {kind for kind in get_args(field.annotation)} - {type(None)} or {
            field.annotation
        }
        if bool in kinds:
            group.add_argument(
                _flag(name), dest=name, action=argparse.BooleanOptionalAction, default=None,
                help=help_text,
            )
            continue
        kind: Any = int if int in kinds else float
        default = field.get_default(call_default_factory=True)
        group.add_argument(
            _flag(name), dest=name, type=kind, default=None,
            help=f"{help_text} (default: {default})",
        )


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """Build an :class:`EmulatorConfig` from flags added by :func:`add_cli_arguments`."""
    values = {
        name: getattr(args, name)
        for name in EmulatorConfig.model_fields
        if getattr(args, name, None) is not None
    }
    return EmulatorConfig(**values)
