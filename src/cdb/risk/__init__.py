"""Risk decisions: portfolio state, limits and the emergency stop; pure, no I/O."""
