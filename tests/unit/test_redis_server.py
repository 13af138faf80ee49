"""standins.redis_server: a server started on a port someone else took must
not pass for ours (test suites side by side, a port reused while ours was down)."""

from __future__ import annotations

import pytest

from standins.redis_server import LocalRedisServer, RedisServerError, server_pid


@pytest.mark.parametrize("password", [None, "same-password-0123"])
def test_a_port_taken_by_another_server_is_refused_not_used(password):
    other = LocalRedisServer(password=password)
    other.start()
    try:
        assert server_pid(other.port, password=password) == other.process.pid
        impostor = LocalRedisServer(port=other.port, password=password)
        with pytest.raises(RedisServerError):
            impostor.start()
        impostor.close()
    finally:
        other.close()
