"""Training image uploads: the upload-URL call (contract §2) and the presigned PUT.

The PUT checks the URL's signature and lifetime (403 ``AccessDenied`` XML), reads the body
(throttled to ``upload_bandwidth``), and keeps only a digest, the size and a thumbnail.
Bodies that are not a whole png/jpeg/webp picture, or not of the declared
``file_extension``, are refused with a JSON 400 ``INVALID_IMAGE_FORMAT`` (the contract's
reason; real storage would take any bytes, and the training would fail much later).
"""

from __future__ import annotations

import asyncio
import hashlib

from aiohttp import web

from pipeline.api.contract import IMAGE_EXTENSIONS

from .config import EmulatorConfig
from .core import EMULATOR_KEY
from .errors import ApiError, S3Error
from .images import ImageRejected, inspect_image
from .responses import base_url
from .validation import get_choice, read_json_object

READ_CHUNK = 64 * 1024


def upload_path(assets_id: str, extension: str) -> str:
    """Where the presigned PUT of one asset goes."""
    return f"/_s3/training/{assets_id}.{extension}"


async def create_upload_url(request: web.Request) -> web.Response:
    """``POST /v3/assets/training_dataset``."""
    emulator = request.app[EMULATOR_KEY]
    body = await read_json_object(request)
    extension = get_choice(body, "file_extension", IMAGE_EXTENSIONS, required=True)
    assert extension is not None
    asset = emulator.issue_asset(extension)
    url = emulator.signer.sign(
        base_url(request),
        "PUT",
        upload_path(asset.assets_id, extension),
        emulator.clock.now(),
        emulator.config.upload_url_ttl,
    )
    return web.json_response(
        {
            "assets_id": asset.assets_id,
            "upload_url": url,
            "method": "PUT",
            "headers": {"Host": {"values": [request.host]}},
        }
    )


async def _read_body(request: web.Request, config: EmulatorConfig) -> bytes:
    limit = config.max_upload_bytes
    too_big = ApiError(400, "IMAGE_FILE_EXCEEDS_MAX_SIZE", f"uploads are limited to {limit} bytes")
    if request.content_length is not None and request.content_length > limit:
        raise too_big
    bandwidth = config.upload_bandwidth
    chunk_size = READ_CHUNK if bandwidth is None else max(1024, min(READ_CHUNK, int(bandwidth)))
    chunks: list[bytes] = []
    total = 0
    while chunk := await request.content.read(chunk_size):
        total += len(chunk)
        if total > limit:
            raise too_big
        chunks.append(chunk)
        if bandwidth is not None:
            await asyncio.sleep(len(chunk) / bandwidth)
    return b"".join(chunks)


async def put_upload(request: web.Request) -> web.Response:
    """``PUT /_s3/training/{assets_id}.{ext}`` (presigned, no auth)."""
    emulator = request.app[EMULATOR_KEY]
    emulator.signer.verify("PUT", request.path, request.query, emulator.clock.now())
    asset = emulator.assets.get(request.match_info["assets_id"])
    if asset is None:
        raise S3Error(404, "NoSuchUpload", "The specified upload does not exist.")
    data = await _read_body(request, emulator.config)
    emulator.counters.bytes_received += len(data)
    try:
        info = await asyncio.to_thread(inspect_image, data)
    except ImageRejected as rejected:
        raise ApiError(400, rejected.reason, rejected.message) from rejected
    if info.extension != asset.extension:
        raise ApiError(
            400,
            "INVALID_IMAGE_FORMAT",
            f"declared file_extension {asset.extension!r} but received a {info.extension} image",
        )
    asset.uploaded = True
    asset.size = len(data)
    asset.sha256 = hashlib.sha256(data).hexdigest()
    asset.width, asset.height, asset.thumbnail = info.width, info.height, info.thumbnail
    emulator.counters.uploads += 1
    return web.Response(status=200, headers={"ETag": f'"{asset.sha256[:32]}"'})
