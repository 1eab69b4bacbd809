"""The operator console: one web page to watch and steer a pipeline (``cdb console``)."""
