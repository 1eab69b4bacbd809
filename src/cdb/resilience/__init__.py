"""Surviving infrastructure failures: Redis connections, backoff, breaker, buffers."""
