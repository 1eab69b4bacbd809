"""Hosting services: lifecycle, the consume loop, embedded and distributed runners."""
