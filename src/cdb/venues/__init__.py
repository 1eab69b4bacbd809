"""Venues: where orders are executed (paper, Binance)."""
