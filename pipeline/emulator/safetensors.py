"""A small but valid ``.safetensors`` LoRA file, derived deterministically from a training.

Layout (the safetensors format): an 8-byte little-endian header length, a JSON header (padded
with spaces to a multiple of 8) mapping each tensor name to ``dtype``, ``shape`` and
``data_offsets`` (relative to the data section) plus ``__metadata__``, then the raw
little-endian tensor bytes. The same training always yields the same bytes, so the hash the
model list advertises can be checked against a download.
"""

from __future__ import annotations

import hashlib
import json
import random
import struct

#: LoRA-adapted modules: (kohya-style name, in_features, out_features).
_MODULES = (
    ("lora_unet_down_blocks_0_attentions_0_proj_in", 32, 32),
    ("lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q", 64, 64),
    ("lora_te_text_model_encoder_layers_0_self_attn_q_proj", 48, 48),
)


def _floats(rng: random.Random, count: int, scale: float) -> bytes:
    return struct.pack(f"<{count}f", *(rng.gauss(0.0, scale) for _ in range(count)))


def build_lora_file(task_id: str, rank: int, is_sdxl: bool, name: str) -> bytes:
    """The ``.safetensors`` bytes of the LoRA trained by ``task_id``."""
    rng = random.Random(hashlib.sha256(task_id.encode()).digest())
    tensors: list[tuple[str, list[int], bytes]] = []
    for module, fan_in, fan_out in _MODULES:
        tensors.append((f"{module}.alpha", [], struct.pack("<f", float(rank))))
        tensors.append((f"{module}.lora_down.weight", [rank, fan_in],
                        _floats(rng, rank * fan_in, 0.02)))
        tensors.append((f"{module}.lora_up.weight", [fan_out, rank],
                        _floats(rng, fan_out * rank, 0.002)))
    header: dict[str, object] = {
        "__metadata__": {
            "format": "pt",
            "ss_network_module": "networks.lora",
            "ss_network_dim": str(rank),
            "ss_base_model_version": "sdxl_base_v1-0" if is_sdxl else "sd_v1",
            "ss_output_name": name,
            "emulator_task_id": task_id,
        }
    }
    offset = 0
    for tensor_name, shape, data in tensors:
        header[tensor_name] = {
            "dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(data)]
        }
        offset += len(data)
    raw_header = json.dumps(header, separators=(",", ":")).encode()
    raw_header += b" " * (-len(raw_header) % 8)
    body = b"".join(data for _, _, data in tensors)
    return struct.pack("<Q", len(raw_header)) + raw_header + body


def hash_prefix(data: bytes) -> str:
    """The first 10 hex digits of the SHA-256 of ``data``, upper case (``hash_sha256``)."""
    return hashlib.sha256(data).hexdigest()[:10].upper()
