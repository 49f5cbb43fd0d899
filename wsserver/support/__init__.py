"""What every floor above shares, one of each: `backoff.py` (the capped back-off),
`blocking.py` (backend calls off the hub, bounded), `redis.py` (the Redis client factory,
its timeouts and fail-fast window), `validators.py` (the one style of setting
validators). Imports nothing of wsserver but its errors.
"""
