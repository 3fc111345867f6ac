"""Traefik tasks: read the routers of the API (paginated bare arrays). Reads only."""

from __future__ import annotations

from typing import Any

from prefect import task

from blocks.edge import TraefikApi
from labops.errors import ApiError
from labops.models.traefik import TraefikRouter, parse_routers

MAX_PAGES = 1000


@task(name="traefik-routers", retries=1)
def http_routers(block: TraefikApi, page_size: int = 100) -> list[TraefikRouter]:
    """Every HTTP router (``/api/http/routers``), following ``X-Next-Page``. Reads only."""
    client = block.get_client()
    items: list[dict[str, Any]] = []
    page = 1
    with client:
        for _ in range(MAX_PAGES):
            resp = client.request(
                "GET", "/api/http/routers", params={"per_page": page_size, "page": page}
            )
            body = resp.json()
            if not isinstance(body, list):
                raise ApiError("traefik", "/api/http/routers: expected a JSON array")
            items.extend(body)
            nxt = int(resp.headers.get("X-Next-Page", "1") or 1)
            if nxt <= page:  # Traefik answers 1 on the last page
                break
            page = nxt
    return parse_routers(items)
