"""Two hundred SSH hosts in one process: startup time, memory, and every host answering.

Nothing here is timed against a threshold (the machine is shared); the numbers are printed so a
regression shows in the log, and the only assertion is that every host answers correctly.
"""

from __future__ import annotations

import asyncio
import time

import asyncssh

from tests.sandbox.fleet_harness import FleetHarness


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def _ask_all(h: FleetHarness, hosts: list[str], parallel: int = 50) -> dict[str, str]:
    sem = asyncio.Semaphore(parallel)
    known = asyncssh.read_known_hosts(h.known_hosts)
    key = asyncssh.read_private_key(h.key_file)

    async def one(name: str) -> tuple[str, str]:
        async with (
            sem,
            asyncssh.connect(
                "127.0.0.1",
                h.port(name),
                username="root",
                client_keys=[key],
                known_hosts=known,
                agent_path=None,
                config=None,
            ) as conn,
        ):
            res = await conn.run("hostname; cat /etc/os-release | head -n 1", check=True)
            return name, str(res.stdout)

    return dict(await asyncio.gather(*(one(n) for n in hosts)))


def test_two_hundred_hosts_start_and_answer() -> None:
    rss0 = _rss_mib()
    t0 = time.monotonic()
    # 241 containers: 4 nodes + ~200 containers with sshd listen (every 7th has none, 1/19 stopped).
    h = FleetHarness(containers=241, time_scale=0.05)
    startup = time.monotonic() - t0
    try:
        listening = [s.name for s in h.svc.specs.values() if s.name in h.svc._servers]
        rss = _rss_mib() - rss0
        assert len(listening) >= 200, len(listening)
        cpu0 = time.process_time()
        t1 = time.monotonic()
        answers = asyncio.run(_ask_all(h, listening))
        elapsed = time.monotonic() - t1
        cpu = time.process_time() - cpu0
        for name in listening:
            assert answers[name].startswith(f"{name}\n")
            assert "PRETTY_NAME=" in answers[name] or "NAME=" in answers[name]
        print(
            f"\nfleet scale: {len(h.svc.specs)} hosts ({len(listening)} listening) "
            f"started in {startup:.2f}s, RSS +{rss:.1f} MiB; one command on each in "
            f"{elapsed:.2f}s wall, {cpu:.2f}s CPU (client+server, incl. SSH handshakes)"
        )
    finally:
        h.close()
