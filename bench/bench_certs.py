"""Benchmark of the certificates flow: 100 and 1,000 TLS endpoints on loopback, ratios in one run.

    .venv/bin/python bench/bench_certs.py [--endpoints 100 1000] [--sample 50] [--no-flow]

Setup: a root and an intermediate CA; one leaf per endpoint name (EC P-256, leaf + intermediate
served), all served by a separate process on a few listeners that pick the certificate by SNI.
Measured in the same run:

1. sequential ``openssl s_client | openssl x509`` per endpoint (what ssl-cert-check does), on a
   sample, extrapolated to all endpoints (stated);
2. the floor: a bare asyncio/ssl handshake loop, 64 at once, reading the leaf;
3. labops' probing stage (``labops.certificates.check.check_endpoints``: handshake with SNI,
   full chain, validation against the roots + system store, classification) -
   goal: within 1.5x the floor;
4. the whole ``certificates`` flow run (fixed costs included: flow and task runs, artifacts, state)
   against a real Prefect server started for the benchmark - goal: >= 10x faster than (1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import random
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LISTENERS = 8
CONCURRENCY = 64


# -- the TLS servers (a child process, so client and server do not share one event loop) -------


def serve(directory: Path, ports: list[int]) -> None:
    names = (directory / "names.txt").read_text().split()
    contexts: dict[str, ssl.SSLContext] = {}
    for name in names:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(directory / f"{name}.pem", directory / f"{name}.key")
        contexts[name] = ctx

    def pick(sslobj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        chosen = contexts.get(server_name or "")
        if chosen is not None:
            sslobj.context = chosen

    default = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    default.load_cert_chain(directory / f"{names[0]}.pem", directory / f"{names[0]}.key")
    default.sni_callback = pick

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.read(1024)
        writer.close()

    async def main() -> None:
        servers = [
            await asyncio.start_server(handle, "127.0.0.1", p, ssl=default, backlog=1024)
            for p in ports
        ]
        (directory / "ready").write_text("ok")
        await asyncio.gather(*(s.serve_forever() for s in servers))

    asyncio.run(main())


def make_endpoints(directory: Path, count: int) -> tuple[list[tuple[str, int]], Path]:
    from sandbox.tls import SandboxCA

    root = SandboxCA.create("Bench Root CA")
    inter = root.issue_intermediate(
        "Bench Intermediate CA", not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    )
    (directory / "root.pem").write_bytes(root.cert_pem)
    ports = [free_port() for _ in range(LISTENERS)]
    rng = random.Random(7)
    endpoints = []
    for i in range(count):
        name = f"svc{i:04d}.bench.lab"
        left_days = rng.choice([0.5, 3, 20, 45, 80])
        start = dt.datetime.now(dt.UTC) - dt.timedelta(days=90 - left_days)
        issued = root.issue_server_cert([name], issuer=inter, not_before=start, days=90)
        (directory / f"{name}.pem").write_bytes(issued.chain_pem)
        (directory / f"{name}.key").write_bytes(issued.key_pem)
        endpoints.append((name, ports[i % LISTENERS]))
    (directory / "names.txt").write_text("\n".join(n for n, _ in endpoints))
    (directory / "ports.txt").write_text(" ".join(map(str, ports)))
    return endpoints, directory / "root.pem"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- 1. sequential openssl -----------------------------------------------------------------------


def sequential_openssl(endpoints: list[tuple[str, int]], sample: int) -> float:
    """Seconds per endpoint of ``openssl s_client | openssl x509 -enddate``, on a sample."""
    picks = random.Random(1).sample(endpoints, min(sample, len(endpoints)))
    started = time.perf_counter()
    for name, port in picks:
        out = subprocess.run(
            f"openssl s_client -connect 127.0.0.1:{port} -servername {name} </dev/null "
            "2>/dev/null | openssl x509 -noout -enddate",
            shell=True,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if "notAfter=" not in out.stdout:
            raise RuntimeError(f"openssl loop failed for {name}: {out.stderr}")
    return (time.perf_counter() - started) / len(picks)


# -- 2. the floor --------------------------------------------------------------------------------


async def bare_loop(endpoints: list[tuple[str, int]]) -> int:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(name: str, port: int) -> bytes:
        async with gate:
            _r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=name)
            der = w.get_extra_info("ssl_object").getpeercert(binary_form=True)
            w.transport.abort()
            return bytes(der)

    got = await asyncio.gather(*(one(n, p) for n, p in endpoints))
    return sum(1 for d in got if d)


def floor_seconds(endpoints: list[tuple[str, int]]) -> float:
    started = time.perf_counter()
    ok = asyncio.run(bare_loop(endpoints))
    elapsed = time.perf_counter() - started
    if ok != len(endpoints):
        raise RuntimeError(f"floor: only {ok} of {len(endpoints)} handshakes")
    return elapsed


# -- 3. labops' probing stage ----------------------------------------------------------------------


def labops_seconds(endpoints: list[tuple[str, int]], root: Path) -> tuple[float, dict[str, int]]:
    from labops.certificates.chain import TrustAnchors
    from labops.certificates.check import check_endpoints
    from labops.certificates.models import Target
    from labops.config.policies.certificates import CertificatePolicy

    policy = CertificatePolicy(concurrency=CONCURRENCY)
    targets = [Target(name=n, address="127.0.0.1", port=p) for n, p in endpoints]
    started = time.perf_counter()
    anchors = TrustAnchors.from_pem([root.read_bytes()])
    results = check_endpoints(targets, anchors, policy)
    elapsed = time.perf_counter() - started
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
    if counts.get("unreachable"):
        raise RuntimeError(f"labops: unreachable endpoints: {counts}")
    return elapsed, counts


# -- 4. the whole flow run ----------------------------------------------------------------------


def flow_seconds(
    endpoints: list[tuple[str, int]], root: Path, work: Path, sizes: list[int]
) -> dict[int, list[float]]:
    """Three certificates flow runs per size (the first ``size`` endpoints), one server."""
    import yaml

    from labops import prefect_server

    home = work / "prefect"
    info = prefect_server.start(home, port=prefect_server.free_port(), ui=False, timeout_s=180)
    os.environ["PREFECT_API_URL"] = info.api_url
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    try:
        from flows.certificates import certificates
        from labops.certificates.report import CertificateReport

        runs: dict[int, list[float]] = {}
        for n in sizes:
            config = {
                "lab": {"name": "bench", "state_dir": str(work / f"state-{n}")},
                "inventory": {
                    "discover_from_proxmox": False,
                    "endpoints": [
                        {"name": name, "address": "127.0.0.1", "port": p}
                        for name, p in endpoints[:n]
                    ],
                },
                "certificates": {"trusted_roots": [str(root)], "concurrency": CONCURRENCY},
            }
            path = work / f"labops-{n}.yaml"
            path.write_text(yaml.safe_dump(config))
            times = runs.setdefault(n, [])
            for _ in range(3):
                started = time.perf_counter()
                state = certificates(config=str(path), return_state=True)
                times.append(time.perf_counter() - started)
                report = state.result(raise_on_failure=False)
                if not isinstance(report, CertificateReport) or len(report.endpoints) != n:
                    raise RuntimeError(f"flow run did not report every endpoint: {state}")
                print(
                    f"  {n} endpoints: flow run {times[-1]:.2f} s, of which the probing task "
                    f"{report.probe_seconds:.2f} s",
                    flush=True,
                )
        return runs
    finally:
        prefect_server.stop(home)


def emit_results(
    n: int,
    sample: int,
    seq: float,
    floor: float,
    lab: float,
    paired: float,
    flow_runs: list[float] | None,
) -> None:
    """The BENCH-RESULT lines of the contract in bench/common.py (for bench/run_all.py)."""
    from bench.common import BenchResult, emit

    size = f"{n} endpoints"
    emit(
        BenchResult(
            benchmark="certs",
            name="probing stage vs bare asyncio/ssl loop",
            size=size,
            contender=lab,
            contender_label="labops probing",
            baseline=floor,
            baseline_label=f"asyncio/ssl, {CONCURRENCY} at once",
            ratio=paired,
            ratio_label="labops / loop, median of paired rounds",
            goal="<= 1.5",
            met=paired <= 1.5,
            notes=f"best/best {lab / floor:.2f}x",
        )
    )
    if flow_runs:
        best = min(flow_runs)
        emit(
            BenchResult(
                benchmark="certs",
                name="whole flow run vs sequential openssl loop",
                size=size,
                contender=best,
                contender_label="flow run",
                baseline=seq * n,
                baseline_label="openssl s_client loop",
                ratio=seq * n / best,
                ratio_label="loop / flow",
                goal=">= 10",
                met=seq * n / best >= 10,
                notes=f"loop extrapolated from {sample} endpoints; first flow run "
                f"{flow_runs[0]:.2f} s ({seq * n / flow_runs[0]:.1f}x)",
            )
        )


def probe_rounds(
    endpoints: list[tuple[str, int]], root: Path, rounds: int
) -> tuple[float, float, float]:
    """(best floor, best labops, median of paired labops/floor) over interleaved rounds."""
    floors, labs = [], []
    counts: dict[str, int] = {}
    n = len(endpoints)
    # Interleaved rounds, compared pairwise: the machine is shared and its load drifts, so a
    # round's floor and labops run see the same conditions.
    for _ in range(rounds):
        floors.append(floor_seconds(endpoints))
        elapsed, counts = labops_seconds(endpoints, root)
        labs.append(elapsed)
    floor, lab = min(floors), min(labs)
    paired = statistics.median(x / f for x, f in zip(labs, floors, strict=True))
    print(
        f"{n} endpoints: floor, bare asyncio/ssl {CONCURRENCY} at once: best {floor:.2f} s "
        f"({floor / n * 1000:.2f} ms/endpoint; runs {', '.join(f'{f:.2f}' for f in floors)})"
    )
    print(
        f"  labops probing stage (probe + chain + classify): best {lab:.2f} s "
        f"({lab / n * 1000:.2f} ms/endpoint; runs {', '.join(f'{x:.2f}' for x in labs)})"
    )
    print(f"  statuses: {counts}")
    print(
        f"  RATIO probing stage / floor: {paired:.2f}x median of paired rounds, "
        f"{lab / floor:.2f}x best/best (goal <= 1.5x)"
    )
    return floor, lab, paired


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--sample", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5, help="floor/labops rounds")
    parser.add_argument("--no-flow", action="store_true")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="100 endpoints: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.endpoints, args.sample, args.rounds = [min(min(args.endpoints), 100)], 10, 2
    if args.serve:
        serve(args.serve, [int(p) for p in (args.serve / "ports.txt").read_text().split()])
        return 0
    sizes = sorted(set(args.endpoints))
    work = Path(tempfile.mkdtemp(prefix="labops-bench-certs-"))
    server = None
    try:
        t0 = time.perf_counter()
        endpoints, root = make_endpoints(work, max(sizes))
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(work)], cwd=REPO)
        while not (work / "ready").exists():
            if server.poll() is not None:
                raise RuntimeError("TLS server process exited")
            time.sleep(0.1)
        print(
            f"setup: {len(endpoints)} endpoints (one leaf + intermediate per SNI name, "
            f"{LISTENERS} listeners in a separate process) in {time.perf_counter() - t0:.1f} s"
        )

        seq = sequential_openssl(endpoints, args.sample)
        print(
            f"sequential openssl s_client | openssl x509: {seq * 1000:.1f} ms/endpoint "
            f"(measured on {args.sample}, the same for every size)"
        )
        probes = {n: probe_rounds(endpoints[:n], root, args.rounds) for n in sizes}
        flows = {} if args.no_flow else flow_seconds(endpoints, root, work, sizes)
        for n in sizes:
            floor, lab, paired = probes[n]
            runs = flows.get(n)
            if runs:
                print(
                    f"{n} endpoints, whole flow run (Prefect server warm, fixed costs "
                    f"included): {', '.join(f'{r:.2f} s' for r in runs)}; RATIO sequential "
                    f"openssl ({seq * n:.1f} s) / best flow run: {seq * n / min(runs):.1f}x "
                    "(goal >= 10x)"
                )
            emit_results(n, args.sample, seq, floor, lab, paired, runs)
        load = os.getloadavg()[0]
        print(
            f"(load average {load:.1f} on "
            f"{os.cpu_count()} CPUs: other work on the machine skews every number)"
        )
        return 0
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
