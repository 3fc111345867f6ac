"""``labops deploy``: create or update every labops deployment of the config's lab in one command.

Each deployment is named after the lab (``backups/<lab>``) and tagged ``lab:<lab>``, so labs
sharing a Prefect server keep their own. Without ``--pool`` they are registered for serve mode
(the lab's own ``labops serve`` process runs them); with ``--pool`` they go to a process work
pool that ``prefect worker start`` processes poll, on this host or others with the same checkout.
A work pool serves one lab: its workers run every deployment in it with their own config and
secrets, so a pool that holds another lab's deployments is refused.
"""

from __future__ import annotations

import argparse
import contextlib
import io
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from cli.common import RawDescriptionFormatter, add_config_option, load, progress
from deployments.catalog import FLOWS
from deployments.definitions import (
    DeploymentSpec,
    deploy_to_pool,
    deployment_specs,
    retire_old_deployments,
)
from deployments.overlaps import schedule_warnings
from deployments.poll import worker_env
from labops.config import LabopsConfig
from labops.errors import ConfigError, LabopsError
from labops.scope import lab_slug, labs_of_tags
from tasks.prefect_admin import ensure_zombie_automation

PROJECT_DIR = Path(__file__).resolve().parents[1]
"""The checkout workers run the flows from (the pull step changes into it)."""


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "deploy",
        help="create or update every deployment (schedules, parameters) on the Prefect server",
        description=(__doc__ or "").replace("``", "`"),
        formatter_class=RawDescriptionFormatter,
    )
    add_config_option(parser)
    parser.add_argument(
        "--pool",
        nargs="?",
        const="",
        default=None,
        metavar="NAME",
        help="deploy to this process work pool (created if missing); --pool alone uses "
        "platform.work_pool. Without --pool: serve mode",
    )
    parser.add_argument(
        "--source",
        type=Path,
        default=PROJECT_DIR,
        metavar="DIR",
        help="with --pool: the directory workers run the flows from; every worker host needs it "
        f"at the same path (default: where labops is installed, {PROJECT_DIR})",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="FLOW",
        help=f"deploy only these ({', '.join(FLOWS)})",
    )
    parser.set_defaults(handler=handle)


def chosen_specs(config: LabopsConfig, path: Path, only: list[str] | None) -> list[DeploymentSpec]:
    """The specs to deploy; an unknown ``--only`` name is a config error naming it."""
    unknown = sorted(set(only or []) - set(FLOWS))
    if unknown:
        known = ", ".join(FLOWS)
        raise ConfigError(f"--only: unknown flow(s) {', '.join(unknown)} (known: {known})")
    return [s for s in deployment_specs(config, path) if not only or s.flow in only]


def require_server() -> str:
    """The API URL deployments go to; never Prefect's throwaway ephemeral server."""
    from cli.common import use_local_server

    api = use_local_server()
    if api is None:
        raise LabopsError(
            "no Prefect server: set PREFECT_API_URL (e.g. http://prefect.lan:4200/api) "
            "or start one with `labops server start`"
        )
    return api


def ensure_process_pool(name: str) -> bool:
    """Create the process work pool ``name`` unless it exists; True when created.

    Same result as ``prefect work-pool create NAME --type process``: the pool gets the process
    worker's default job template, so deployments can set job variables against it.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            pass
        else:
            if pool.type != "process":
                raise LabopsError(f"work pool {name!r} exists with type {pool.type}, not process")
            return False
        try:
            client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type="process",
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                    description="labops flows (prefect worker start --pool " + name + ")",
                )
            )
        except ObjectAlreadyExists:  # another `labops deploy` won the race
            return False
    return True


def other_labs_in_pool(pool: str, lab: str) -> list[str]:
    """The labs (slugs) other than ``lab`` with labops deployments in the work pool ``pool``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterTags,
        WorkPoolFilter,
        WorkPoolFilterName,
    )

    with get_client(sync_client=True) as client:
        found = client.read_deployments(
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])),
            deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=["labops"])),
        )
    return sorted({slug for d in found for slug in labs_of_tags(d.tags)} - {lab_slug(lab)})


def apply_served(specs: list[DeploymentSpec]) -> tuple[dict[str, str], list[str]]:
    """Register serve-mode deployments; returns ({flow: id}, flows not installed here)."""
    from deployments.definitions import runner_deployments

    deployments = runner_deployments(specs)
    by_flow = {d.flow_name: d for d in deployments}
    ids: dict[str, str] = {}
    for spec in specs:
        deployment = by_flow.get(spec.flow)
        if deployment is not None:
            ids[spec.flow] = str(deployment.apply())
    missing = [s.flow for s in specs if s.flow not in by_flow]
    return ids, missing


def vacuum_warning(retention_days: int) -> str | None:
    """A line when the server will not prune flow runs after ``platform.retention_days``."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            response = client.request("GET", "/admin/settings")  # type: ignore[arg-type]
            settings = response.json()
    except Exception:  # an older or locked-down server: nothing to compare with
        return None
    vacuum = settings.get("server", {}).get("services", {}).get("db_vacuum", {})
    enabled = vacuum.get("enabled")
    kinds = set(enabled) if isinstance(enabled, list) else {"flow_runs"} if enabled else set()
    try:  # the server sends an ISO 8601 duration ("P30D")
        retention = TypeAdapter(timedelta).validate_python(vacuum.get("retention_period"))
    except ValidationError:
        retention = None
    if "flow_runs" not in kinds:
        return (
            "note: the server does not prune old flow runs; set "
            "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED=events,flow_runs on it"
        )
    if retention is not None and retention != timedelta(days=retention_days):
        return (
            f"note: the server keeps flow runs {retention.days} days, the config says "
            f"{retention_days}: set PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD="
            f"{retention_days * 86400}"
        )
    return None


def _schedule_text(spec: DeploymentSpec) -> str:
    return f"{spec.cron} ({spec.timezone})" if spec.cron else "manual only"


def handle(args: argparse.Namespace) -> int:
    path, config = load(args)
    specs = chosen_specs(config, path, args.only)
    api = require_server()
    mode = "serve" if args.pool is None else "pool"
    pool = (args.pool or config.platform.work_pool) if mode == "pool" else None
    progress(f"labops: deploying {len(specs)} flow(s) from {path} to {api}")
    for line in schedule_warnings(config):
        progress(line)
    lab = config.lab.name
    try:
        if pool is not None:
            others = other_labs_in_pool(pool, lab)
            if others:
                raise ConfigError(
                    f"work pool {pool!r} holds deployments of another lab ({', '.join(others)}): "
                    "its workers would run both labs' flows with one host's config and secrets; "
                    "give each lab its own pool (platform.work_pool, or --pool NAME)"
                )
            created = ensure_process_pool(pool)
            progress(f"labops: work pool {pool!r} " + ("created" if created else "exists"))
            # Prefect prints a table per deployment; the summary below says the same once.
            with contextlib.redirect_stdout(io.StringIO()):
                pool_ids = deploy_to_pool(specs, pool, args.source.resolve())
            ids = dict(zip([s.flow for s in specs], pool_ids, strict=True))
            missing: list[str] = []
        else:
            ids, missing = apply_served(specs)
        for old in retire_old_deployments(specs, lab):
            progress(f"labops: deleted {old}, this lab's deployment of the old naming")
        # Without it a killed worker leaves its runs Running (and their no-overlap slot taken).
        zombies = ensure_zombie_automation.fn(config.platform.zombie_after_seconds)
        progress(f"labops: zombie-run automation {zombies}")
    except LabopsError:
        raise
    except Exception as exc:  # httpx/prefect errors: one line, the server named
        raise LabopsError(f"deploy to {api} failed: {type(exc).__name__}: {exc}") from None
    for spec in specs:
        if spec.flow in ids:
            print(f"{spec.full_name:32} {_schedule_text(spec):32} {ids[spec.flow]}")
    for name in missing:
        print(f"{name:16} skipped: its flow is not installed in this tree")
    note = vacuum_warning(config.platform.retention_days)
    if note:
        progress(note)
    if pool is not None:
        print(f"\nStart one or more workers of {lab} (each with {args.source.resolve()}):")
        poll = " ".join(f"{k}={v}" for k, v in worker_env().items())  # API runs start at once
        print(f"  PREFECT_API_URL={api} {poll} prefect worker start --pool {pool}")
    else:
        print(f"\nRun them (schedules, UI, API and MQTT runs) with one process for {lab}:")
        print(f"  labops serve --config {path}")
    return 1 if missing and not ids else 0
