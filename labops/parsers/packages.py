"""What every package-manager parser returns: one pending update per package."""

from __future__ import annotations

from pydantic import BaseModel, Field


class PendingUpdate(BaseModel):
    """A package with a newer version available."""

    name: str
    from_version: str | None = Field(None, description="Installed version (None: new package).")
    to_version: str
    suites: list[str] = Field(
        default_factory=list, description="Archives offering the new version (apt: the suite)."
    )
    arch: str | None = None
    security: bool | None = Field(
        None, description="True/False where the source tells (apt suites); None: unknown (apk)."
    )
