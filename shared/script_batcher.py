"""One Lua script, many concurrent callers, one pipeline.

Under load many tool calls wait on Redis at the same moment. Sent one by one,
each EVALSHA pays redis-py's per-call cost again (a pool checkout, a lock, a
timeout, a write system call, a read): at contact-centre volume that was half
of the receiver's CPU. Here calls that arrive while a batch is on the wire go
out together in the next one, each still its own atomic script run with its
own answer. An idle receiver sends a batch of one at once, so nothing waits
for a timer.

A `looped` script takes the whole batch in one run: KEYS and ARGV are the
calls' own, one call's after another's, and it answers a list, an answer per
call (shared/lua/enqueue.lua). One EVALSHA instead of one per call: fewer
commands for redis-py to pack and parse and for Redis to start a script for
(the tool endpoint's CPU, both sides). Its calls must each pass the same number
of keys and of arguments, which the script knows.

With a `ReplicaWait`, the batch ends with Redis's own `WAIT replicas timeout`,
in the same pipeline (still one round trip): the answers are handed out only
once that many replicas have every write the batch made, so a failover that
promotes one of them cannot lose what was acknowledged. When fewer confirm in
time, every call of the batch gets `NotReplicated` instead of its answer (its
writes stay on the primary: a retry is answered from them, de-duplicated).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from shared import redis_keys
from shared.settings import Settings

MAX_BATCH = 256

_Call = tuple[Sequence[Any], Sequence[Any], asyncio.Future[Any]]


@dataclass(frozen=True)
class ReplicaWait:
    """`WAIT replicas timeout_ms` after each batch (HANDOVER_MIN_REPLICAS).

    `fence_key` is written (INCR) just before the WAIT: since Redis 7.2, and in
    Valkey, WAIT waits only for the connection's own last write, and a batch
    that wrote nothing (every call a repeat, answered from a handover a previous
    batch stored) would check an old position and pass while the replicas still
    lack that handover. After the fence write, a pass means the replicas have
    everything the primary had when the batch ran."""

    replicas: int
    timeout_ms: int
    fence_key: str

    @classmethod
    def of(cls, settings: Settings) -> ReplicaWait | None:
        """HANDOVER_MIN_REPLICAS' wait, or None when it is 0."""
        if not settings.min_replicas:
            return None
        return cls(
            settings.min_replicas,
            int(settings.replica_timeout_seconds * 1000),
            redis_keys.REPLICA_WAIT_FENCE,
        )


class NotReplicated(RedisError):
    """Written on the primary, but fewer replicas than asked for confirmed it in time."""

    def __init__(self, confirmed: int, wait: ReplicaWait):
        super().__init__(
            f"{confirmed} of {wait.replicas} replica(s) confirmed the write within "
            f"{wait.timeout_ms} ms"
        )
        self.confirmed = confirmed
        self.wait = wait


class ScriptBatcher:
    """`await batcher(keys, args)` runs the script like `Script.__call__` does."""

    def __init__(
        self,
        redis: aioredis.Redis,
        script: str,
        max_batch: int = MAX_BATCH,
        replica_wait: ReplicaWait | None = None,
        *,
        looped: bool = False,
    ):
        self._redis = redis
        self._looped = looped
        self._replica_wait = replica_wait
        self._script = script
        self._sha = hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()
        self._max_batch = max_batch
        self._pending: list[_Call] = []
        self._in_flight: list[_Call] = []
        self._sender: asyncio.Task[None] | None = None

    async def __call__(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((keys, args, future))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_while_pending())
            self._sender.add_done_callback(self._sender_done)
        return await future

    async def _send_while_pending(self) -> None:
        while self._pending:
            batch = self._in_flight = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                results = await self._run(batch)
            except Exception as exc:  # noqa: BLE001 - every caller gets the error
                results = [exc] * len(batch)
            for (_, _, future), result in zip(batch, results, strict=True):
                if future.done():  # the caller went away
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
            self._in_flight = []

    def _sender_done(self, sender: asyncio.Task[None]) -> None:
        """A sender cancelled (the loop closing) must not leave callers waiting."""
        if sender.cancelled():
            for _, _, future in self._in_flight + self._pending:
                future.cancel()
            self._in_flight, self._pending = [], []

    async def _run(self, batch: list[_Call]) -> list[Any]:
        results = await self._pipeline(batch)
        missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if missing:  # a restarted or flushed Redis forgot the script: load it, send again
            await self._redis.script_load(self._script)
            retried = await self._pipeline([batch[i] for i in missing])
            for i, result in zip(missing, retried, strict=True):
                results[i] = result
        return results

    async def _pipeline(self, batch: list[_Call]) -> list[Any]:
        wait = self._replica_wait
        async with self._redis.pipeline(transaction=False) as pipe:
            if self._looped:
                every_key = [key for keys, _, _ in batch for key in keys]
                every_arg = [arg for _, args, _ in batch for arg in args]
                pipe.evalsha(self._sha, len(every_key), *every_key, *every_arg)
            else:
                for keys, args, _ in batch:
                    pipe.evalsha(self._sha, len(keys), *keys, *args)
            if wait is not None:
                pipe.incr(wait.fence_key)
                pipe.execute_command("WAIT", wait.replicas, wait.timeout_ms)
            results: list[Any] = await pipe.execute(raise_on_error=False)
        if self._looped:  # the one run's answers, or its error for every call
            answers = results[0]
            results[:1] = [answers] * len(batch) if isinstance(answers, Exception) else answers
        if wait is None:
            return results
        confirmed = results.pop()
        fenced = results.pop()
        if isinstance(fenced, Exception):
            confirmed = fenced
        if isinstance(confirmed, Exception):
            problem: Exception = confirmed
        elif int(confirmed) < wait.replicas:
            problem = NotReplicated(int(confirmed), wait)
        else:
            return results
        # A script that failed keeps its own error (NoScriptError: sent again).
        return [result if isinstance(result, Exception) else problem for result in results]
