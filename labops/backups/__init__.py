"""Backups: planning, running and auditing vzdump backups and restore drills (no Prefect)."""
