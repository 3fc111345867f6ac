"""Patching: checking pending updates and rolling them out (no Prefect)."""
