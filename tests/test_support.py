"""The shared helpers of wsserver/support: the back-off rule and the Redis fail-fast
window built on it."""

import pytest

from wsserver.support.backoff import Backoff
from wsserver.support.redis import FailFast


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_a_success():
    slept = []
    backoff = Backoff(0.05, 0.3, sleep=slept.append)
    assert [backoff.sleep() for _ in range(5)] == [0.05, 0.1, 0.2, 0.3, 0.3]
    assert slept == [0.05, 0.1, 0.2, 0.3, 0.3]
    backoff.reset()
    assert backoff.next() == 0.05
    with pytest.raises(ValueError):
        Backoff(0, 1)


def test_the_redis_fail_fast_window_follows_the_backoff_rule():
    now = [0.0]
    window = FailFast(clock=lambda: now[0], first=0.5, cap=2.0)
    assert not window.skip() and not window.failing

    def window_after_a_failure():
        """How long skip() stays True after one more failure, to 0.01 s."""
        start = now[0]
        window.failed()
        assert window.failing
        length = 0.0
        while window.skip():
            length += 0.01
            now[0] = start + length
        return round(length, 2)

    assert [window_after_a_failure() for _ in range(4)] == [0.5, 1.0, 2.0, 2.0]
    window.answered()  # an answer starts the rule over
    assert not window.failing and window_after_a_failure() == 0.5
