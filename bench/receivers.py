"""Baselines for bench/load.py: what a user would otherwise put behind the tool URL.

python bench/receivers.py bare --port P   # reads the request, answers 202:
                                          # aiohttp's own limit on this machine
python bench/receivers.py bare --uvloop --port P   # the same on uvloop, the loop
                                          # flex-handover runs on (shared/event_loop.py)
python bench/receivers.py arq --port P    # awaits arq's enqueue_job per call
                                          # (needs REDIS_URL)
"""

from __future__ import annotations

import argparse
import os
import uuid

from aiohttp import web
from arq.connections import ArqRedis, create_pool

from shared import redis_keys
from shared.arq_jobs import job_deserializer, job_serializer
from shared.event_loop import new_event_loop
from shared.redis_client import arq_redis_settings

POOL = web.AppKey("pool", ArqRedis)


async def bare(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(status=202, text='{"status":"queued"}', content_type="application/json")


async def naive_arq(request: web.Request) -> web.Response:
    await request.read()
    handover_id = "ho_" + uuid.uuid4().hex
    job = await request.app[POOL].enqueue_job(
        redis_keys.HANDOVER_FUNCTION,
        handover_id,
        _job_id=handover_id,
        _queue_name=redis_keys.QUEUE_NAME,
    )
    if job is None:
        return web.json_response({"error": "duplicate"}, status=409)
    return web.json_response({"handover_id": handover_id, "status": "queued"}, status=202)


def build_app(kind: str) -> web.Application:
    app = web.Application()
    if kind == "bare":
        app.router.add_post("/tools/flex-handover", bare)
        return app

    async def pool_context(app: web.Application):
        app[POOL] = await create_pool(
            arq_redis_settings(os.environ["REDIS_URL"]),
            job_serializer=job_serializer,
            job_deserializer=job_deserializer,
        )
        yield
        await app[POOL].aclose()

    app.cleanup_ctx.append(pool_context)
    app.router.add_post("/tools/flex-handover", naive_arq)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=("bare", "arq"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--uvloop", action="store_true", help="on uvloop, as flex-handover runs")
    args = parser.parse_args()
    loop = new_event_loop() if args.uvloop else None
    web.run_app(build_app(args.kind), host="127.0.0.1", port=args.port, access_log=None,
                print=None, loop=loop)  # fmt: skip


if __name__ == "__main__":
    main()
