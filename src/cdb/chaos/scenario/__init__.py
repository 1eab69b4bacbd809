"""The scenario format: YAML with positions, JSON Schema, validation, model, timeline."""
