"""lora-pipeline: folders of photos in, trained LoRAs and generated pictures out.

    from pipeline import Runner, Settings, load_job

    summary = await Runner(load_job(Path("jobs/portraits.toml")), Settings()).run_once(
        max_wait=240
    )
"""

from .api import ApiClient
from .config import Settings
from .engine.runner import Runner, RunResult
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
    StateConflict,
    StoreError,
    TransientApiError,
    TransportError,
    UrlExpired,
)
from .jobfile.loading import JobConfig, load_job

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
    "StateConflict",
    "StoreError",
    "TransientApiError",
    "TransportError",
    "UrlExpired",
    "load_job",
]
__version__ = "0.1.0"
