"""`flex-handover worker --check`: is the worker on this host taking jobs?

For a container's health check. A running worker records arq's health line
under a key named after its host (`redis_keys.worker_health_key`) every
WORKER_HEALTH_INTERVAL_SECONDS, with a TTL one second longer, so the key is
there only while the worker polls Redis and Redis takes its writes. The check
reads that key: it fails when Redis cannot be reached, or when the key is gone
(no worker on this host, or one that cannot reach Redis or write to it).

Workers sharing a host (not a container each) share the key: the check then
says that at least one of them is healthy.
"""

from __future__ import annotations

import socket

from redis.exceptions import RedisError

from shared import redis_keys
from shared.connections import redis_error_text
from shared.redis_client import create_redis, redis_location
from shared.settings import RedisTarget

# How often a worker records its health (arq's `health_check_interval`; set by
# worker.main). arq keeps the record a second longer, so it vanishes soon after
# the worker stops reaching Redis. Kept here, apart from worker.main (arq's
# worker, the Twilio client): a health check runs every few seconds and should
# start fast.
WORKER_HEALTH_INTERVAL_SECONDS = 5


async def check(where: RedisTarget | str) -> tuple[bool, str]:
    """(healthy, one line saying why) for the worker on this host."""
    host = socket.gethostname()
    location = redis_location(where)
    redis = create_redis(where)
    try:
        record = await redis.get(redis_keys.worker_health_key(host))
    except (RedisError, OSError) as exc:
        return False, f"cannot reach Redis at {location} ({redis_error_text(exc)})"
    finally:
        await redis.aclose()
    if record is None:
        within = WORKER_HEALTH_INTERVAL_SECONDS + 1
        return False, (
            f"no worker on {host} has recorded its health in Redis at {location} within "
            f"{within}s: none is running, or it cannot reach Redis or write to it (see its log)"
        )
    return True, f"worker on {host} healthy: {record}"
