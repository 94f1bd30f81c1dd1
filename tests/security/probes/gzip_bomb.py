"""Run in a subprocess: a JSON answer (and a picture) sent with Content-Encoding gzip or
deflate that inflates far past its bound; prints the outcome and the RSS growth."""
import asyncio
import json
import sys
import tempfile
import zlib
from pathlib import Path

from aiohttp import web
from peak_memory import peak_rss_mib
from pydantic import SecretStr

from pipeline.api import ApiClient
from pipeline.config import Settings

ENCODING = sys.argv[1]  # gzip | deflate
WHAT = sys.argv[2]  # json | picture
INFLATED = 1 << 30  # 1 GiB once inflated


def bomb() -> bytes:
    wbits = 31 if ENCODING == "gzip" else 15
    comp = zlib.compressobj(9, zlib.DEFLATED, wbits)
    head = b'{"task_id":"t1","task_status":"TRAINING","pad":"' if WHAT == "json" \
        else b"\x89PNG\r\n\x1a\n"
    out = [comp.compress(head)]
    chunk = b"a" * (1 << 20)
    for _ in range(INFLATED >> 20):
        out.append(comp.compress(chunk))
    out.append(comp.compress(b'"}'))
    out.append(comp.flush())
    return b"".join(out)


def rss_mib() -> float:
    return peak_rss_mib()


async def main() -> None:
    payload = bomb()
    app = web.Application()

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=payload, headers={
            "Content-Type": "application/json", "Content-Encoding": ENCODING})

    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    settings = Settings(_env_file=None, api_key=SecretStr("sk-review-0123456789abcdef"),
                        base_url=base, max_json_bytes=1 << 20, max_picture_bytes=1 << 20,
                        retry_max_attempts=1)
    before = rss_mib()
    outcome = "accepted"
    async with ApiClient(settings) as api:
        try:
            if WHAT == "json":
                await api.training_status("subject", "t1")
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    await api.download(base + "/x.png", Path(tmp) / "x.png")
        except Exception as exc:  # noqa: BLE001
            outcome = f"{type(exc).__name__}: {exc}"
    print(json.dumps({"compressed_kib": len(payload) >> 10, "outcome": outcome[:200],
                      "rss_before_mib": round(before), "rss_peak_mib": round(rss_mib())}))
    await runner.cleanup()


asyncio.run(main())
