"""Patching: the host check (each tool's command beside its parser), the plan, the report."""
