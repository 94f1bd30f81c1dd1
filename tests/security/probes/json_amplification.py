"""Run in a subprocess: RSS growth and event-loop stalls while the real client reads pages of
JSON just under LORA_MAX_JSON_BYTES, kept the way ModelIndex / TaskIndex keep them.

    python tests/security/probes/json_amplification.py models|tasks PAGES MIB
"""
import asyncio
import json
import sys

from aiohttp import web
from peak_memory import peak_rss_mib
from pydantic import SecretStr

from pipeline.api import ApiClient
from pipeline.config import Settings
from pipeline.errors import ApiError

KIND = sys.argv[1]  # models | tasks
PAGES = int(sys.argv[2]) if len(sys.argv) > 2 else 1
LIMIT = int(float(sys.argv[3]) * (1 << 20)) if len(sys.argv) > 3 else 4 << 20


def body(page: int) -> bytes:
    if KIND == "models":
        entry = '{"id":%d,"sd_name":"m%d"}'
        key = "models"
    else:
        entry = '{"task_id":"%d","task_name":"n%d"}'
        key = "tasks"
    parts, size, n = [], 20, page * 10_000_000
    while size < LIMIT - 100:
        item = entry % (n, n)
        parts.append(item)
        size += len(item) + 1
        n += 1
    cursor = f"c{page + 1}" if page + 1 < PAGES else ""
    listing = ",".join(parts)
    return f'{{"{key}":[{listing}],"pagination":{{"next_cursor":"{cursor}"}}}}'.encode()


def rss_mib() -> float:
    return peak_rss_mib()


async def main() -> None:
    served = []
    app = web.Application()

    async def handler(request: web.Request) -> web.Response:
        cursor = request.query.get("pagination.cursor", "")
        page = int(cursor[1:]) if cursor else 0
        payload = body(page)
        served.append(len(payload))
        return web.Response(body=payload, content_type="application/json")

    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    settings = Settings(_env_file=None, api_key=SecretStr("sk-review-0123456789abcdef"),
                        base_url=f"http://127.0.0.1:{port}")
    before = rss_mib()
    kept = {}
    lag = [0.0]

    async def ticker() -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(0.01)
            now = loop.time()
            lag[0] = max(lag[0], now - last)
            last = now

    tick = asyncio.create_task(ticker())
    refused = ""
    async with ApiClient(settings) as api:
        try:
            if KIND == "models":
                async for model in api.iter_trained_models():
                    kept[model.api_name] = model
            else:
                async for task in api.iter_training_tasks():
                    kept.setdefault(task.task_name, task)
        except ApiError as exc:
            refused = str(exc)
    after = rss_mib()
    tick.cancel()
    print(json.dumps({"pages": len(served), "answer_mib": round(max(served) / (1 << 20), 1),
                      "entries": len(kept),
                      "rss_before_mib": round(before), "rss_peak_mib": round(after),
                      "longest_loop_block_s": round(lag[0], 2), "refused": refused}))
    await runner.cleanup()


asyncio.run(main())
