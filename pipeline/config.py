"""Settings: one pydantic-settings class, read from the environment and ``config.env``.

Built once by the CLI and passed down; no module reads the environment on its own.
Every variable is prefixed ``LORA_`` (``LORA_API_KEY``, ``LORA_BASE_URL`` ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import aiohttp
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from yarl import URL

from .redact import MIN_SECRET_LENGTH

HOSTED_BASE_URL = "https://api.novita.ai"
MIB = 1 << 20
GIB = 1 << 30


class Settings(BaseSettings):
    """Everything the pipeline can be told. See ``config.env.example`` for each default."""

    model_config = SettingsConfigDict(
        env_prefix="LORA_", env_file="config.env", env_file_encoding="utf-8", extra="ignore",
        hide_input_in_errors=True,  # a refused key must not be quoted back in the error
    )

    api_key: SecretStr | None = Field(default=None, description="key of the hosted API")
    base_url: str = Field(default=HOSTED_BASE_URL, description="root of the API")
    user_agent: str = "lora-pipeline/0.1"

    connect_timeout: float = Field(default=10.0, gt=0)
    read_timeout: float = Field(default=60.0, gt=0)
    total_timeout: float = Field(default=300.0, gt=0)

    max_connections: int = Field(default=32, ge=1)
    upload_concurrency: int = Field(default=8, ge=1)
    download_concurrency: int = Field(default=8, ge=1)

    poll_interval_min: float = Field(default=5.0, gt=0)
    poll_interval_max: float = Field(default=60.0, gt=0)
    generation_poll_interval: float = Field(default=2.0, gt=0)
    generation_deadline: float = Field(default=3600.0, gt=0)
    stop_grace_seconds: float = Field(default=10.0, ge=0)

    retry_max_attempts: int = Field(default=6, ge=1)
    retry_base_delay: float = Field(default=0.5, ge=0)
    retry_max_delay: float = Field(default=30.0, ge=0)

    # Bounds on what the service sends (see README "Security"); each breach is an error
    # recorded on the subject.
    max_json_bytes: int = Field(default=4 * MIB, ge=1024)
    max_pages: int = Field(default=1000, ge=1)
    max_lora_bytes: int = Field(default=GIB, ge=1024)
    max_picture_bytes: int = Field(default=64 * MIB, ge=1024)
    max_redirects: int = Field(default=5, ge=0)
    transfer_stall_seconds: float = Field(default=60.0, gt=0)
    transfer_min_bytes_per_second: int = Field(default=4096, ge=0)

    images_per_minute: int = Field(default=20, ge=1)
    img2img_images_per_minute: int = Field(default=10, ge=1)
    training_deadline: float = Field(default=24 * 3600.0, gt=0)
    deploy_deadline: float = Field(default=3600.0, gt=0)

    #: Where the state database and the job's lock live. None (the default) keeps them with
    #: the job's results, in ``<outbox>/<job>/.lora-pipeline/``, so every working directory
    #: finds the same state (see :func:`pipeline.store.location.state_dir`).
    state_dir: Path | None = None
    #: A PostgreSQL database shared by several workers (hosts) of a job, instead of the
    #: SQLite file: ``postgresql://user:password@host/dbname``. Secret: it may carry a password.
    state_url: SecretStr | None = None
    #: How long a worker's lease on a subject (or a role: intake, the poller) lasts unless
    #: its heartbeat renews it (every third of it): a dead worker's work waits this long.
    lease_seconds: float = Field(default=60.0, ge=3)
    log_format: Literal["auto", "console", "json"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("api_key", mode="before")
    @classmethod
    def _no_empty_key(cls, value: object) -> object:
        """``LORA_API_KEY=`` (the example file copied as it is) means no key at all."""
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return value

    @field_validator("state_dir", mode="before")
    @classmethod
    def _no_empty_state_dir(cls, value: object) -> object:
        """``LORA_STATE_DIR=`` means the default place, not the working directory."""
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("state_url", mode="before")
    @classmethod
    def _postgres_url(cls, value: object) -> object:
        """Empty means SQLite; anything else must be a PostgreSQL URL."""
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        if not text.startswith(("postgresql://", "postgres://")):
            raise ValueError(
                "LORA_STATE_URL must be a PostgreSQL URL (postgresql://user@host/dbname), "
                "or empty for the SQLite file"
            )
        return value

    @field_validator("api_key")
    @classmethod
    def _plausible_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"LORA_API_KEY is {len(value.get_secret_value())} characters, too short to be "
                f"a key of the service (at least {MIN_SECRET_LENGTH}): copy the whole key"
            )
        return value

    @field_validator("base_url")
    @classmethod
    def _http_base_url(cls, value: str) -> str:
        try:
            url = URL(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"LORA_BASE_URL {value!r} is not a URL: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host or url.user or url.query_string:
            raise ValueError(
                f"LORA_BASE_URL {value!r} must be an http(s) URL with a host and no user or "
                "query, such as https://api.novita.ai"
            )
        return value

    def client_timeout(self) -> aiohttp.ClientTimeout:
        """Timeouts split by phase, as aiohttp wants them."""
        return aiohttp.ClientTimeout(
            total=self.total_timeout, connect=self.connect_timeout, sock_read=self.read_timeout
        )
