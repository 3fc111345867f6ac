"""TLS certificate checking: probe endpoints (asyncio), validate chains, classify with reasons.

Pure of Prefect: the tasks in ``tasks/tls.py`` wrap these for the certificates flow.
"""
