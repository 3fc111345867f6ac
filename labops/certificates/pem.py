"""PEM text to DER bytes: certificates read from an API (Proxmox, step-ca) become what a probe
would have received on the wire."""

from __future__ import annotations

import base64


def pem_to_der(pem: str) -> bytes:
    """The DER bytes of one PEM certificate (armour lines dropped)."""
    body = "".join(line for line in pem.strip().splitlines() if not line.startswith("-----"))
    return base64.b64decode(body)
