"""Settings: one pydantic-settings class, read from the environment and ``config.env``.

Built once by the CLI and passed down; no module reads the environment on its own.
Every variable is prefixed ``LORA_`` (``LORA_API_KEY``, ``LORA_BASE_URL`` ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import aiohttp
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

HOSTED_BASE_URL = "https://api.novita.ai"


class Settings(BaseSettings):
    """Everything the pipeline can be told. See ``config.env.example`` for each default."""

    model_config = SettingsConfigDict(
        env_prefix="LORA_", env_file="config.env", env_file_encoding="utf-8", extra="ignore"
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

    retry_max_attempts: int = Field(default=6, ge=1)
    retry_base_delay: float = Field(default=0.5, ge=0)
    retry_max_delay: float = Field(default=30.0, ge=0)

    images_per_minute: int = Field(default=20, ge=1)
    training_deadline: float = Field(default=24 * 3600.0, gt=0)
    deploy_deadline: float = Field(default=3600.0, gt=0)

    state_dir: Path = Path(".lora-pipeline")
    log_format: Literal["auto", "console", "json"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    def client_timeout(self) -> aiohttp.ClientTimeout:
        """Timeouts split by phase, as aiohttp wants them."""
        return aiohttp.ClientTimeout(
            total=self.total_timeout, connect=self.connect_timeout, sock_read=self.read_timeout
        )
