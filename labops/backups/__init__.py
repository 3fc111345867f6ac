"""Backups and restore drills: models, plan, retention, per-node limits, audit, drill, report."""
