"""Run reports: one self-contained HTML file per run (or two runs side by side)."""
