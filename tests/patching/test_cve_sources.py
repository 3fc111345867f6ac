"""The CVE lookup against the sandbox's OSV, Debian tracker and KEV services (real HTTP): fresh
answers, a stale feed, an unreachable feed (with and without a cached copy), an unreachable OSV,
an unknown ecosystem, and the cache that keeps a second lookup off the network."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from labops.config.policies.cves import CvePolicy
from tasks.cves import HostPackages, lookup

DEB12 = HostPackages(
    host="web",
    os_id="debian",
    version_id="12",
    codename="bookworm",
    packages=[
        ("libssl3", "3.0.16-1~deb12u1", "3.0.17-1~deb12u3"),
        ("openssh-server", "1:9.2p1-2+deb12u6", "1:9.2p1-2+deb12u7"),
        ("sudo", "1.9.13p3-1+deb12u1", "1.9.13p3-1+deb12u2"),
        ("tzdata", "2025a-0+deb12u1", "2025b-0+deb12u1"),
    ],
)
ALPINE = HostPackages(
    host="edge",
    os_id="alpine",
    version_id="3.20.3",
    packages=[("libcrypto3", "3.3.2-r1", "3.3.3-r0"), ("curl", "8.11.1-r0", "8.12.1-r0")],
)
UBUNTU = HostPackages(
    host="ubu",
    os_id="ubuntu",
    version_id="24.04",
    packages=[("libc6", "2.39-0ubuntu8.5", "2.39-0ubuntu8.6")],
)


@pytest.fixture
def feeds(sandbox_clean: Any) -> Iterator[Any]:
    yield sandbox_clean
    sandbox_clean.control("vulnfeeds", "reset")


def _policy(sandbox: Any, **kw: Any) -> CvePolicy:
    cfg = yaml.safe_load(Path(sandbox.config_path).read_text())
    data = {**cfg["patching"]["cves"], "retry": {"attempts": 1, "timeout_s": 3}, **kw}
    return CvePolicy.model_validate(data)


def test_fresh_answers_match_the_real_shapes(feeds: Any, tmp_path: Path) -> None:
    feeds.control("vulnfeeds", "kev_add", cves=["CVE-2025-9230"])
    got = lookup(_policy(feeds), tmp_path, [DEB12, ALPINE, UBUNTU])
    assert [(f.name, f.health) for f in got.feeds] == [
        ("osv", "fresh"),
        ("kev", "fresh"),
        ("debian-tracker", "fresh"),
    ]
    rows = {h.host: h for h in got.hosts}
    web = {(c.package, c.cve): c for c in rows["web"].cves}
    # binary packages mapped to their source: libssl3 -> openssl (DSA-6015-1), CVSS 8.1 high
    ssl = web[("libssl3", "CVE-2025-9230")]
    assert (ssl.advisory, ssl.severity, ssl.score, ssl.kev) == ("DSA-6015-1", "high", 8.1, True)
    assert not web[("libssl3", "CVE-2025-9232")].kev
    # no CVSS in the record: the Debian tracker's urgency
    ssh = web[("openssh-server", "CVE-2025-61984")]
    assert (ssh.severity, ssh.severity_from) == ("low", "debian-tracker")
    assert web[("sudo", "CVE-2025-32462")].severity == "high"  # scope-changed 8.8
    assert not any(c.package == "tzdata" for c in rows["web"].cves)
    edge = {c.cve: c for c in rows["edge"].cves}
    assert set(edge) == {"CVE-2024-12797", "CVE-2025-0665", "CVE-2025-0725"}
    assert edge["CVE-2025-0665"].severity == "unknown"  # no score, no word: said so
    assert [(c.cve, c.severity_from) for c in rows["ubu"].cves] == [("CVE-2025-4802", "ubuntu")]
    # batched: one querybatch call for all 2 x 7 queries
    assert got.queries == 14


def test_second_lookup_is_served_from_the_cache(feeds: Any, tmp_path: Path) -> None:
    lookup(_policy(feeds), tmp_path, [DEB12])
    before = feeds.control("vulnfeeds", "stats")
    again = lookup(_policy(feeds), tmp_path, [DEB12])
    after = feeds.control("vulnfeeds", "stats")
    assert after == before and again.osv_calls == 0
    assert again.hosts[0].cves


def test_stale_kev_feed_is_named(feeds: Any, tmp_path: Path) -> None:
    feeds.control("vulnfeeds", "kev_age", days=10)
    got = lookup(_policy(feeds), tmp_path, [DEB12])
    kev = next(f for f in got.feeds if f.name == "kev")
    assert kev.health == "stale" and kev.age_h is not None and kev.age_h >= 239
    assert "max_age_h" in kev.detail
    assert got.hosts[0].cves and got.hosts[0].could_not_check is None  # still used, named stale


def test_unreachable_kev_without_copy_is_could_not_check(feeds: Any, tmp_path: Path) -> None:
    feeds.set_faults("kev", error_rate=1.0)
    got = lookup(_policy(feeds), tmp_path, [DEB12])
    kev = next(f for f in got.feeds if f.name == "kev")
    assert kev.health == "unreachable" and "500" in kev.detail
    assert got.hosts[0].cves == []
    assert got.hosts[0].could_not_check and "kev unreachable" in got.hosts[0].could_not_check


def test_unreachable_kev_with_copy_uses_it_as_stale(feeds: Any, tmp_path: Path) -> None:
    lookup(_policy(feeds), tmp_path, [DEB12])
    feeds.set_faults("kev", reset_rate=1.0)
    got = lookup(_policy(feeds, refresh_h=0), tmp_path, [DEB12])
    kev = next(f for f in got.feeds if f.name == "kev")
    assert kev.health == "stale" and "cached copy used" in kev.detail
    assert got.hosts[0].could_not_check is None and got.hosts[0].cves


def test_unreachable_tracker_is_named(feeds: Any, tmp_path: Path) -> None:
    feeds.set_faults("debian-tracker", error_rate=1.0)
    got = lookup(_policy(feeds), tmp_path, [DEB12])
    tracker = next(f for f in got.feeds if f.name == "debian-tracker")
    assert tracker.health == "unreachable"
    ssh = next(c for c in got.hosts[0].cves if c.package == "openssh-server")
    assert ssh.severity == "unknown"  # the urgency is unknown, not "low"


def test_unreachable_osv_leaves_every_host_unchecked(feeds: Any, tmp_path: Path) -> None:
    feeds.set_faults("osv", error_rate=1.0)
    got = lookup(_policy(feeds), tmp_path, [DEB12, ALPINE])
    assert got.feeds[0].name == "osv" and got.feeds[0].health == "unreachable"
    assert all(h.could_not_check and h.could_not_check.startswith("osv:") for h in got.hosts)
    assert all(not h.cves for h in got.hosts)


def test_unknown_ecosystem(feeds: Any, tmp_path: Path) -> None:
    arch = HostPackages(host="arch", os_id="arch", version_id="rolling", packages=[("a", "1", "2")])
    got = lookup(_policy(feeds), tmp_path, [arch, ALPINE])
    rows = {h.host: h for h in got.hosts}
    assert rows["arch"].could_not_check == "no OSV ecosystem for arch rolling"
    assert rows["edge"].cves  # one host's unknown OS does not spoil the others
    # an ecosystem the server does not know: OSV answers 400, named, never "no CVEs"
    old = HostPackages(host="old", os_id="alpine", version_id="3.10", packages=[("x", "1", "2")])
    bad = lookup(_policy(feeds), tmp_path / "b", [old])
    assert bad.hosts[0].could_not_check and "400" in bad.hosts[0].could_not_check
