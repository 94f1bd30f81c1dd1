"""lora-pipeline: folders of photos in, trained LoRAs and generated pictures out."""

from .config import Settings
from .errors import (
    ApiError,
    ApiStatusError,
    BadCredentials,
    ConfigError,
    DatasetError,
    LockHeld,
    PipelineError,
    StateConflict,
    TransportError,
)

__all__ = [
    "ApiError",
    "ApiStatusError",
    "BadCredentials",
    "ConfigError",
    "DatasetError",
    "LockHeld",
    "PipelineError",
    "Settings",
    "StateConflict",
    "TransportError",
]
__version__ = "0.1.0"
