"""cdb: a resilient, event-driven crypto trading pipeline with a chaos test coordinator."""

__version__ = "0.1.0"
