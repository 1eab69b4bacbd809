"""Hosting services: consume loop, HTTP, discovery; the embedded, distributed, up runners."""
