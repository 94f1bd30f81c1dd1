"""lora-pipeline: folders of photos in, trained LoRAs and generated pictures out.

    from pipeline import Runner, Settings, load_job

    summary = await Runner(load_job(Path("jobs/portraits.toml")), Settings()).run_once(
        max_wait=240
    )

The heavier names (the client, settings, runner, job files) are imported when first used,
so that starting the command line, which installs its signal handling first, stays quick.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    ApiError,
    ApiStatusError,
    BadCredentials,
    ConfigError,
    DatasetError,
    IntegrityError,
    LockHeld,
    NotFound,
    PermanentApiError,
    PipelineError,
    RateLimited,
    SpendCeilingReached,
    StateConflict,
    StoreError,
    TransientApiError,
    TransportError,
    UrlExpired,
)

if TYPE_CHECKING:
    from .api import ApiClient
    from .config import Settings
    from .engine.runner import Runner, RunResult
    from .jobfile.loading import JobConfig, load_job

_LAZY = {
    "ApiClient": ".api", "Settings": ".config", "Runner": ".engine.runner",
    "RunResult": ".engine.runner", "JobConfig": ".jobfile.loading", "load_job": ".jobfile.loading",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ApiClient",
    "ApiError",
    "ApiStatusError",
    "BadCredentials",
    "ConfigError",
    "DatasetError",
    "IntegrityError",
    "JobConfig",
    "LockHeld",
    "NotFound",
    "PermanentApiError",
    "PipelineError",
    "RateLimited",
    "RunResult",
    "Runner",
    "Settings",
    "SpendCeilingReached",
    "StateConflict",
    "StoreError",
    "TransientApiError",
    "TransportError",
    "UrlExpired",
    "load_job",
]
__version__ = "0.1.0"
