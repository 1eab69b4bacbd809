"""Riding out a failing dependency: backoff schedules, the circuit breaker and its probe."""
