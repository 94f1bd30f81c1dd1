"""Names and limits fixed by the hosted API's contract, shared by the client and the emulator."""

from __future__ import annotations

from typing import Final

BASE_MODELS: Final = frozenset(
    {
        "stable-diffusion-xl-base-1.0",
        "dreamshaperXL09Alpha_alpha2Xl10_91562",
        "protovisionXLHighFidelity3D_release0630Bakedvae_154359",
        "v1-5-pruned-emaonly",
        "epicrealism_naturalSin_121250",
        "chilloutmix_NiPrunedFp32Fix",
        "abyssorangemix3AOM3_aom3a3_10864",
        "dreamshaper_8_93211",
        "WFChild_v1.0",
        "majichenmixrealistic_v10",
        "realisticVisionV51_v51VAE_94301",
        "sdxlUnstableDiffusers_v11_216694",
        "realisticVisionV40_v40VAE_81510",
        "epicrealismXL_v10_247189",
        "somboy_v10_172675",
        "yesmixXL_v10_283329",
        "animagineXLV31_v31_325600",
    }
)

#: Training base models of the SDXL family (the rest are SD 1.5); LoRAs do not cross families.
SDXL_BASE_MODELS: Final = frozenset(
    {
        "stable-diffusion-xl-base-1.0",
        "dreamshaperXL09Alpha_alpha2Xl10_91562",
        "protovisionXLHighFidelity3D_release0630Bakedvae_154359",
        "sdxlUnstableDiffusers_v11_216694",
        "epicrealismXL_v10_247189",
        "yesmixXL_v10_283329",
        "animagineXLV31_v31_325600",
    }
)

SAMPLERS: Final = frozenset(
    {
        "Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM++ 2S a", "DPM++ 2M",
        "DPM++ SDE", "DPM fast", "DPM adaptive", "LMS Karras", "DPM2 Karras", "DPM2 a Karras",
        "DPM++ 2S a Karras", "DPM++ 2M Karras", "DPM++ SDE Karras", "DDIM", "PLMS", "UniPC",
    }
)

LR_SCHEDULERS: Final = frozenset(
    {"constant", "linear", "cosine", "cosine_with_restarts", "polynomial", "constant_with_warmup"}
)
LEARNING_RATES: Final = frozenset({1e-4, 1e-5, 1e-6, 2e-4, 5e-5})
COMPONENT_NAMES: Final = frozenset({"face_crop_region", "resize", "face_restore"})

IMAGE_EXTENSIONS: Final = ("png", "jpeg", "webp")
CONTENT_TYPES: Final = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}

MIN_TRAINING_IMAGES: Final = 1
MAX_TRAINING_IMAGES: Final = 50
RECOMMENDED_TRAINING_IMAGES: Final = 10
MAX_TEXT_LENGTH: Final = 1024  # prompts, negative prompts and captions
MAX_LORAS: Final = 5
MAX_EMBEDDINGS: Final = 5
MIN_SIDE, MAX_SIDE = 128, 2048
MAX_IMAGE_NUM: Final = 8
MAX_TASK_PAGE: Final = 100

TRAINING_STATUSES: Final = ("UNKNOWN", "QUEUING", "TRAINING", "SUCCESS", "CANCELED", "FAILED")
TRAINING_TERMINAL: Final = frozenset({"SUCCESS", "CANCELED", "FAILED"})
MODEL_STATUSES: Final = ("DEPLOYING", "SERVING")

TASK_QUEUED: Final = "TASK_STATUS_QUEUED"
TASK_PROCESSING: Final = "TASK_STATUS_PROCESSING"
TASK_SUCCEED: Final = "TASK_STATUS_SUCCEED"
TASK_FAILED: Final = "TASK_STATUS_FAILED"
TASK_UNKNOWN: Final = "TASK_STATUS_UNKNOWN"

#: Default images per minute per account.
TXT2IMG_IMAGES_PER_MINUTE: Final = 20
IMG2IMG_IMAGES_PER_MINUTE: Final = 10

#: img2img's init image (section 6): at most 16 megapixels and 10 MB (read as 10**6 bytes
#: a MB, the stricter reading); ``strength`` 0..1, 0.5 when not given.
MAX_INIT_IMAGE_PIXELS: Final = 16_000_000
MAX_INIT_IMAGE_BYTES: Final = 10_000_000
DEFAULT_IMG2IMG_STRENGTH: Final = 0.5
