"""Steps a scenario takes: faults (with undo and effect check), actions, probes."""
