"""Soak: a seeded nemesis over a long run, leak checks, shrinking, gateway load."""
