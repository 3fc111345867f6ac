"""Benchmark: what the CVE lookup adds to a patch check sweep, 60 hosts x 100 pending packages.

The lookup (``tasks.cves.lookup``) runs against the sandbox's OSV, Debian tracker and KEV
services over real HTTP: cold (empty cache: every feed fetched, every query sent in batches of
up to 1,000, every advisory fetched) and warm (the next run within ``refresh_h``: everything from
the cache). Goal (issue 17): it adds at most 2 s to a sweep. The baseline is one querybatch call
of the same queries without any of labops' work around it (the cost of the network exchange
alone), measured in the same run.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from bench.common import bench_parser, compare, emit
from tasks.cves import HostPackages

RELEASE_PACKAGES = [  # the Debian 12 catalogue's security updates (real advisories in the sandbox)
    ("libssl3", "3.0.16-1~deb12u1", "3.0.17-1~deb12u3"),
    ("openssl", "3.0.16-1~deb12u1", "3.0.17-1~deb12u3"),
    ("openssh-server", "1:9.2p1-2+deb12u6", "1:9.2p1-2+deb12u7"),
    ("curl", "7.88.1-10+deb12u12", "7.88.1-10+deb12u14"),
    ("sudo", "1.9.13p3-1+deb12u1", "1.9.13p3-1+deb12u2"),
    ("libexpat1", "2.5.0-1+deb12u1", "2.5.0-1+deb12u2"),
    ("nginx", "1.22.1-9+deb12u2", "1.22.1-9+deb12u3"),
]


def hosts(count: int, packages: int) -> list[HostPackages]:
    out = []
    for i in range(count):
        pkgs = list(RELEASE_PACKAGES)
        # the rest: packages of the host's own mix (a homelab's hosts differ), no advisory
        pkgs += [(f"pkg{(i * 7 + j) % 400}", "1.0-1", "1.0-2") for j in range(packages - len(pkgs))]
        out.append(
            HostPackages(
                host=f"ct{i}", os_id="debian", version_id="12", codename="bookworm", packages=pkgs
            )
        )
    return out


def main() -> int:
    args = bench_parser(__doc__).parse_args()
    count, packages = (6, 20) if args.quick else (60, 100)
    from labops.config.policies.cves import CvePolicy
    from tasks.cves import lookup
    from tests.fixtures.sandbox import start_sandbox

    work = Path(tempfile.mkdtemp(prefix="bench-cves-"))
    sandbox = start_sandbox(work / "sandbox", containers=4, vms=0, time_scale=1.0, timeout=120)
    try:
        cfg = yaml.safe_load(Path(sandbox.config_path).read_text())
        policy = CvePolicy.model_validate(cfg["patching"]["cves"])
        asks = hosts(count, packages)
        size = f"{count} hosts x {packages} packages"
        started = time.perf_counter()
        cold = lookup(policy, work / "state", asks)
        cold_s = time.perf_counter() - started
        started = time.perf_counter()
        warm = lookup(policy, work / "state", asks)
        warm_s = time.perf_counter() - started
        found = sum(len(h.cves) for h in cold.hosts)
        assert found == sum(len(h.cves) for h in warm.hosts) and found > 0
        print(
            f"{size}: {cold.queries} distinct queries, {cold.osv_calls} OSV calls, "
            f"{found} CVE rows; cold {cold_s:.2f} s, warm {warm_s:.3f} s ({warm.osv_calls} calls)"
        )
        # baseline: the same distinct queries in one bare querybatch exchange
        body = {
            "queries": [
                {"package": {"name": n, "ecosystem": "Debian:12"}, "version": v}
                for n, v in sorted({(p[0], p[k]) for h in asks for p in h.packages for k in (1, 2)})
            ][:1000]
        }
        started = time.perf_counter()
        httpx.post(policy.osv_url + "/v1/querybatch", content=json.dumps(body), timeout=30)
        bare_s = time.perf_counter() - started
        for label, value in (("cold cache", cold_s), ("warm cache", warm_s)):
            result = compare(
                "cves",
                f"CVE lookup added to a sweep, {label}",
                value,
                bare_s,
                size=size,
                baseline_label="one bare querybatch",
                goal="<= 2 s added",
                notes=f"{cold.queries} queries, {found} CVE rows",
            )
            result.met = value <= 2.0
            emit(result)
    finally:
        sandbox.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
