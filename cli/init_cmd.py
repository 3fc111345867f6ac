"""``labops init``: a first ``labops.yaml`` for one's own lab, from the Proxmox API.

Asks for (or takes as flags) the PVE URL and an API token with a secret *reference*, reads the
lab through the token (nodes, guests, storages, the PBS storage, and Traefik's routers when
given), writes a commented config, prints the privileges the token still lacks per operation,
then runs ``labops config check`` on the file. Reads only: nothing in the lab changes.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import TypeAdapter, ValidationError

from cli.common import progress
from labops.config.secrets import SecretRef
from labops.errors import ConfigError, LabopsError, one_line
from labops.init_config import (
    GuestFact,
    LabFacts,
    NodeFact,
    StorageFact,
    TraefikFact,
    facts_summary,
    missing_by_operation,
    operation_needs,
    paths_to_read,
    privilege_table,
    render,
)
from labops.outcome import EXIT_CONFIG

if TYPE_CHECKING:  # the clients import proxmoxer and httpx: kept out of `labops --help`
    from labops.proxmox import PveClient


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "init",
        help="write a first labops.yaml from your Proxmox VE API (reads only)",
        description="Discovers nodes, guests, storages, the PBS storage and (with --traefik-url) "
        "Traefik's routers through an API token, writes a commented config holding secret "
        "references only, prints the privileges the token lacks for each operation, then runs "
        "`labops config check` on the file. Asks for what the flags leave out, unless "
        "--no-input.",
    )
    parser.add_argument(
        "--pve-url", metavar="URL", help="any node's API, e.g. https://pve1.lab:8006"
    )
    parser.add_argument("--token-id", metavar="ID", help="API token id, USER@REALM!TOKENID")
    parser.add_argument(
        "--token-secret-ref",
        metavar="REF",
        help="where the token's secret is: env:NAME, file:PATH or block:NAME (never the secret)",
    )
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument(
        "--ca-file", metavar="FILE", help="PEM file of the CA that signed the PVE certificate"
    )
    tls.add_argument(
        "--insecure",
        action="store_true",
        help="do not verify the PVE certificate (written as tls.verify: false; avoid)",
    )
    parser.add_argument(
        "--tls-server-name", metavar="NAME", help="host name to verify instead of the URL's"
    )
    parser.add_argument(
        "--traefik-url", metavar="URL", help="Traefik's API, e.g. http://traefik.lab:8080"
    )
    parser.add_argument(
        "--traefik-entrypoint",
        metavar="HOST:PORT",
        help="where HTTPS services are probed (default: the Traefik host, port 443)",
    )
    parser.add_argument(
        "--lab-name", metavar="NAME", help="the lab's name (default: the PVE cluster's name)"
    )
    parser.add_argument(
        "--out", metavar="FILE", default="labops.yaml", help="file to write (labops.yaml)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out")
    parser.add_argument(
        "--no-input", action="store_true", help="never ask: a missing flag is an error"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="seconds per request and per check (10)",
    )
    parser.set_defaults(handler=handle)


# -- asking -----------------------------------------------------------------------------------


class _Asker:
    """Prompts on stderr, answers from stdin; end of input is a missing flag."""

    def __init__(self, allowed: bool) -> None:
        self.allowed = allowed
        self.asked = False

    def required(
        self,
        value: str | None,
        flag: str,
        prompt: str,
        problem: Callable[[str], str | None] = lambda _: None,
    ) -> str:
        """``value``, else the answer to ``prompt``; ``problem`` says what is wrong with an
        answer (asked again) or a flag (an error), never repeating what was typed."""
        while True:
            if not value:
                if not self.allowed:
                    raise ConfigError(f"{flag} is required (or leave out --no-input to be asked)")
                value = self._read(f"{prompt}: ", flag).strip()
                wrong = problem(value) if value else None
                if wrong:
                    print(f"  {wrong}", file=sys.stderr)
                    value = None
                continue
            value = value.strip()
            wrong = problem(value)
            if wrong:
                raise ConfigError(f"{flag}: {wrong}")
            return value

    def optional(self, value: str | None, prompt: str) -> str | None:
        if value or not self.asked:  # flags given: no questions about the optional ones
            return value or None
        return self._read(f"{prompt} (empty: none): ", None).strip() or None

    def _read(self, prompt: str, flag: str | None) -> str:
        self.asked = True
        print(prompt, end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            if flag is None:
                return ""
            raise ConfigError(f"{flag} is required (no answer on stdin)")
        return line.rstrip("\n")


def _not_a_reference(text: str) -> str | None:
    try:
        TypeAdapter(SecretRef).validate_python(text)
    except ValidationError:
        return (
            "not a secret reference: env:VARIABLE, file:/path or block:NAME "
            "(never the secret itself)"
        )
    return None


def _pve_url(text: str) -> str:
    url = text if "://" in text else f"https://{text}"
    parts = urlsplit(url)
    if parts.port is None and parts.hostname:
        url = f"{parts.scheme}://{parts.netloc}:8006{parts.path}"
    return url.rstrip("/")


def _absolute_ref(ref: str) -> str:
    """A relative ``file:`` reference taken from here, where the operator typed it (the loader
    would take it from the config's directory)."""
    if ref.startswith("file:"):
        target = Path(ref.removeprefix("file:")).expanduser()
        if not target.is_absolute():
            return f"file:{target.resolve()}"
    return ref


# -- the command ------------------------------------------------------------------------------


def handle(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not args.force:
        print(f"labops init: {out} exists; pass --force to overwrite it", file=sys.stderr)
        return EXIT_CONFIG
    ask = _Asker(allowed=not args.no_input)
    url = _pve_url(
        ask.required(args.pve_url, "--pve-url", "Proxmox VE API URL (https://host:8006)")
    )
    token_id = ask.required(args.token_id, "--token-id", "API token id (USER@REALM!TOKENID)")
    ref = _absolute_ref(
        ask.required(
            args.token_secret_ref,
            "--token-secret-ref",
            "Token secret reference (env:NAME, file:PATH or block:NAME)",
            _not_a_reference,
        )
    )
    ca_file = args.ca_file
    if not args.insecure:
        ca_file = ask.optional(ca_file, "CA file for the PVE certificate")
    traefik_url = ask.optional(args.traefik_url, "Traefik API URL")

    tls: dict[str, Any] = {}
    if args.insecure:
        tls["verify"] = False
    if ca_file:
        tls["ca_bundle"] = str(Path(ca_file).expanduser().resolve())
    if args.tls_server_name:
        tls["server_name"] = args.tls_server_name
    facts = LabFacts(
        lab_name=args.lab_name or "homelab",
        pve_url=url,
        token_id=token_id,
        token_secret_ref=ref,
        tls=tls,
    )
    pve = _client(facts, args.timeout)
    progress(f"labops init: reading {url} as {token_id}...")
    try:
        facts = _discover(pve, facts, explicit_name=bool(args.lab_name))
    except LabopsError:
        # the error names the config keys; here they come from flags
        progress(
            "labops init: nothing written. systems.proxmox.token_id / token_secret are "
            "--token-id / --token-secret-ref, tls.ca_bundle is --ca-file"
        )
        raise
    if traefik_url:
        facts.traefik = _traefik(traefik_url, args.traefik_entrypoint, args.timeout)

    text = render(facts)
    _write(out, text, force=args.force)
    from labops.config import load_config

    config = load_config(out)  # exactly what every later command reads
    for line in facts_summary(facts):
        progress(f"labops init: {line}")
    progress(f"labops init: wrote {out}")

    print("\nPrivileges the token lacks, per operation (from its own /access/permissions):")
    nodes = [n.name for n in facts.nodes]
    needs = operation_needs(config, nodes)
    try:
        held = {path: sorted(pve.permissions(path)) for path in paths_to_read(needs)}
    except LabopsError as exc:
        print(f"could not check the token's privileges: {one_line(exc)}")
    else:
        print(privilege_table(missing_by_operation(needs, held)))
    print(
        "Roles and the pveum commands: docs/production.md, section 8 "
        "(Proxmox and PBS API tokens, least privilege).\n",
        flush=True,
    )

    from cli.config_cmd import handle_check

    return handle_check(
        argparse.Namespace(config=str(out), offline=False, json=False, timeout=args.timeout)
    )


def _client(facts: LabFacts, timeout_s: float) -> PveClient:
    from labops.config import parse_config
    from labops.config.secrets import resolve_secret
    from labops.proxmox import PveClient

    # the same validation as the file's: a bad URL or token id is one line naming the key
    settings = {
        "url": facts.pve_url,
        "token_id": facts.token_id,
        "token_secret": facts.token_secret_ref,
        "tls": facts.tls,
        "retry": {"timeout_s": timeout_s, "attempts": 2},
    }
    system = parse_config({"systems": {"proxmox": settings}}, source="labops init").systems.proxmox
    assert system is not None
    # the secret is read here only to talk to PVE; the file keeps the reference
    return PveClient(system, resolve_secret(facts.token_secret_ref, "--token-secret-ref"))


def _discover(pve: PveClient, facts: LabFacts, *, explicit_name: bool) -> LabFacts:
    nodes = [NodeFact(name=n.node, online=n.online) for n in pve.nodes()]
    guests = [
        GuestFact(
            vmid=g.vmid, node=g.node, kind=g.type, name=g.name, template=g.template, tags=g.tags
        )
        for g in pve.guests()
    ]
    storages: dict[str, StorageFact] = {}
    for node in nodes:
        if not node.online:
            continue
        try:
            listed = pve.storages(node.name)
        except LabopsError as exc:  # one node failing does not stop the others
            progress(f"labops init: storages of {node.name}: could not read ({one_line(exc)})")
            continue
        for s in listed:
            fact = storages.setdefault(
                s.storage,
                StorageFact(
                    storage=s.storage,
                    type=s.type,
                    content=[c for c in s.content.split(",") if c],
                    shared=s.shared,
                ),
            )
            fact.nodes.append(node.name)
    name = facts.lab_name
    if not explicit_name:
        name = _cluster_name(pve) or name
    return facts.model_copy(
        update={
            "lab_name": name,
            "nodes": nodes,
            "guests": guests,
            "storages": list(storages.values()),
        }
    )


def _cluster_name(pve: PveClient) -> str | None:
    try:
        items = pve.get("cluster/status") or []
    except LabopsError:
        return None  # a single node without a cluster: the default name
    for item in items:
        if isinstance(item, dict) and item.get("type") == "cluster" and item.get("name"):
            return str(item["name"])
    return None


def _traefik(url: str, entrypoint: str | None, timeout_s: float) -> TraefikFact:
    from blocks.edge import TraefikApi
    from labops.http_settings import HttpRetry, TraefikSettings
    from labops.models.traefik import tls_hosts
    from tasks.traefik import http_routers

    entry = entrypoint or f"{urlsplit(url).hostname}:443"
    fact = TraefikFact(url=url.rstrip("/"), entrypoint=entry)
    retry = HttpRetry(timeout_s=timeout_s, attempts=2)
    block = TraefikApi(settings=TraefikSettings(url=url, entrypoint=entry, retry=retry))
    try:
        routers = http_routers.fn(block)  # the task's body: no Prefect run for a CLI read
    except LabopsError as exc:
        progress(f"labops init: Traefik routers: could not read ({one_line(exc)})")
        return fact
    return fact.model_copy(
        update={"routers": len(routers), "tls_hosts": len({h for h, _ in tls_hosts(routers)})}
    )


def _write(out: Path, text: str, *, force: bool) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(out, flags, 0o644)
    except FileExistsError:  # appeared since the first look
        raise ConfigError(f"{out} exists; pass --force to overwrite it") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
