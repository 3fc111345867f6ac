"""Resilience drills: break the lab and the platform on purpose, check labops keeps its promises."""
