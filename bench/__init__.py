"""Benchmarks of labops against the tools and loops it replaces; see ``bench/README.md``."""
