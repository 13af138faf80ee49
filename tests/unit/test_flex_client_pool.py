"""worker.flex_client.FlexClient's connection pool: one connection for each job
the worker may run, lent slots included, so a follow-up job never waits for
another job's connection."""

from __future__ import annotations

import pytest

from shared.settings import Settings
from worker.arq_worker import FOLLOW_UPS_PER_SLOT
from worker.flex_client import FlexClient


@pytest.mark.parametrize("concurrency, connections", [(10, 100), (100, 200), (500, 1000)])
async def test_a_connection_for_every_job_the_worker_may_run(concurrency, connections):
    assert FOLLOW_UPS_PER_SLOT == 1  # the cases below count one follow-up per slot
    flex = FlexClient(Settings(worker_concurrency=concurrency))
    try:
        assert flex._http.session.connector.limit == connections
    finally:
        await flex.close()
