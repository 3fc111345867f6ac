"""Certificates: probe TLS endpoints (asyncio), validate chains, classify with reasons, read what
Proxmox says it serves (``pve.py``), and the report.

Pure of Prefect: the tasks in ``tasks/tls.py`` wrap these for the certificates flow.
"""
