"""Metrics, health, logs and the monitor that samples them; no knowledge of the bus."""
