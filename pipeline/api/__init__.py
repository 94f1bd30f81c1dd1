"""Client of the hosted training API: typed models, errors, retry policy."""

from .client import ApiClient, Download
from .models import (
    DatasetItem,
    ExpertSetting,
    GenerationExtra,
    GenerationResult,
    Img2ImgRequest,
    LoraRef,
    PrivateModel,
    TrainingComponent,
    TrainingRequest,
    TrainingStatus,
    TrainingTask,
    Txt2ImgRequest,
    UploadTicket,
)
from .retry import RetryPolicy, backoff_delay, parse_retry_after, should_retry

__all__ = [
    "ApiClient",
    "DatasetItem",
    "Download",
    "ExpertSetting",
    "GenerationExtra",
    "GenerationResult",
    "Img2ImgRequest",
    "LoraRef",
    "PrivateModel",
    "RetryPolicy",
    "TrainingComponent",
    "TrainingRequest",
    "TrainingStatus",
    "TrainingTask",
    "Txt2ImgRequest",
    "UploadTicket",
    "backoff_delay",
    "parse_retry_after",
    "should_retry",
]
