"""The pipeline a scenario drives: embedded, distributed, or attached to a running one."""
