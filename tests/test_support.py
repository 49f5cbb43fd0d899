"""The shared helpers of wsserver/support: the back-off rule, the Redis client options."""

import pytest

from wsserver.support.backoff import Backoff
from wsserver.support.redis import client_options, redis_client


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_a_success():
    slept = []
    backoff = Backoff(0.05, 0.3, sleep=slept.append)
    assert [backoff.sleep() for _ in range(5)] == [0.05, 0.1, 0.2, 0.3, 0.3]
    assert slept == [0.05, 0.1, 0.2, 0.3, 0.3]
    backoff.reset()
    assert backoff.next() == 0.05
    with pytest.raises(ValueError):
        Backoff(0, 1)


def test_every_redis_client_gets_the_same_timeouts():
    client = redis_client("redis://127.0.0.1:1/0", decode_responses=True)
    kwargs = client.connection_pool.connection_kwargs
    for name, value in client_options().items():
        assert kwargs[name] == value, name
    assert kwargs["decode_responses"] is True
    assert client_options()["socket_timeout"] == 2.0
