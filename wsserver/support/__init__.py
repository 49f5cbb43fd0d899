"""What every floor above shares, one of each: `backoff.py` (the capped back-off),
`wait.py` (waiting for a condition: the one polling rule), `blocking.py` (backend calls
off the hub, bounded), `redis.py` (the Redis client factory, its timeouts and fail-fast
window), `validators.py` (the one style of setting validators), `signals.py` (the one
installer of signal handlers). Imports nothing of wsserver but its errors.
"""
