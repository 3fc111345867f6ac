"""Quiet, redacted failures: labops' own errors read as one line (CLI and run logs), and a secret
inside an error or a notification never reaches a log, a chat or the MQTT bus."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml
from prefect import flow

from blocks.context import LabContext
from labops.reports import Failure, Notification, OperationReport, Severity
from tasks.publish import publish_report
from tests.fixtures.sandbox import REPO, SandboxHandle

# -- the log hook, without a server ---------------------------------------------------------------


def test_expected_errors_lose_their_traceback_and_secrets_are_masked_in_tracebacks() -> None:
    from labops.errors import AuthFailed
    from labops.redact import install_log_filter, register_secret

    install_log_filter()
    secret = "hunter2-token-for-the-hook-test"
    register_secret(secret)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("labops.tests.quiet")  # a child logger: no filter of its own
    logger.addHandler(handler)
    try:
        try:
            raise AuthFailed("proxmox", "token refused (401)\ncheck systems.proxmox.token_id")
        except AuthFailed as exc:
            logger.error("Task run failed with exception: %r", exc, exc_info=True)
        try:
            raise RuntimeError(f"GET https://pve/?token={secret} failed")
        except RuntimeError as exc:
            logger.error("Encountered exception during execution: %r", exc, exc_info=True)
    finally:
        logger.removeHandler(handler)
    quiet, loud = (handler.format(r) for r in records)
    assert quiet == (
        "Task run failed with exception: AuthFailed: proxmox: token refused (401); "
        "check systems.proxmox.token_id"
    )
    assert "Traceback" in loud and "RuntimeError" in loud  # a bug keeps its traceback ...
    assert secret not in loud and "token=*** failed" in loud  # ... masked, message and frames


# -- through the CLI and the Prefect API --------------------------------------------------------


def flow_run_logs(flow_run_id: UUID, *, want: str, timeout: float = 60.0) -> list[str]:
    """The run's log messages on the server, once one containing ``want`` arrived."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10, at_exit=False)
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            logs = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
            )
            messages = [log.message for log in logs]
            if any(want in m for m in messages) or time.monotonic() > deadline:
                return messages
            time.sleep(0.5)


def last_run_of(flow_name: str, config: str) -> UUID:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            sort=FlowRunSort.START_TIME_DESC,
            limit=20,
        )
    return next(r.id for r in runs if r.parameters.get("config") == config)


def test_a_refused_token_is_one_line_on_stderr_and_in_the_run_logs(
    prefect_server: Any, sandbox: SandboxHandle, tmp_path: Path
) -> None:
    cfg = yaml.safe_load(sandbox.config_path.read_text())
    wrong = tmp_path / "wrong-token"
    wrong.write_text("00000000-0000-0000-0000-000000000000\n")
    cfg["systems"]["proxmox"]["token_secret"] = f"file:{wrong}"
    cfg["lab"]["state_dir"] = str(tmp_path / "state")
    path = tmp_path / "labops.yaml"
    path.write_text(yaml.safe_dump(cfg))

    # The real command in a process of its own: Prefect's console handler writes to the stderr
    # it found at start-up, which an in-process capture never sees.
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", "run", "backups", "--config", str(path)],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    err = proc.stderr
    assert proc.returncode == 1, err
    assert "Traceback" not in err and 'File "' not in err, err
    refused = [line for line in err.splitlines() if "token root@pam!labops refused" in line]
    assert any(line.startswith("backups failed: AuthFailed: proxmox: ") for line in refused), err
    assert any("Task run failed with exception: AuthFailed: proxmox: " in line for line in refused)

    messages = flow_run_logs(last_run_of("backups", str(path)), want="AuthFailed: proxmox")
    failed = [m for m in messages if "AuthFailed: proxmox: token root@pam!labops refused" in m]
    assert failed, messages
    assert all("\n" not in m for m in failed), failed
    assert not [m for m in messages if "Traceback" in m], messages


class LeakyReport(OperationReport):
    """A report whose failure quotes a secret, as a careless server answer would."""

    def table(self) -> list[dict[str, Any]]:
        return [{"entity": f.entity, "reason": f.reason} for f in self.failures]

    def markdown(self) -> str:
        return "# leaky\n\n" + "\n".join(f"- {f.entity}: {f.reason}" for f in self.failures)

    def notification(self) -> Notification:
        return Notification(
            title=f"Leaky {self.lab}: FAILED",
            severity=Severity.CRITICAL,
            body=self.failure_summary(),
            topic="leaky/report",
            payload={"failures": [f.model_dump() for f in self.failures]},
        )


@flow(name="leaky")
def leaky(config: str, secret_file: str, crash: bool = False) -> Any:
    """Reads a secret the config registered (by path: never a parameter) and leaks it: into a
    failure reason (notified), or into an unexpected exception (traceback in the logs)."""
    ctx = LabContext.load(config)
    secret = Path(secret_file).read_text().strip()
    if crash:
        raise RuntimeError(f"GET https://pve.lab/api2/json?token={secret} failed")
    report = LeakyReport(operation="leaky")
    report.failures.append(Failure(entity="pve", reason=f"the answer quoted {secret}"))
    return publish_report(report, ctx.delivery())


def test_a_secret_in_an_error_or_a_notification_is_masked_everywhere(
    prefect_server: Any, sandbox_clean: SandboxHandle, mqtt: Any, tmp_path: Path
) -> None:
    sandbox = sandbox_clean
    secret = sandbox.secret("pve_token")
    cfg = yaml.safe_load(sandbox.config_path.read_text())
    cfg["systems"]["mqtt"] = mqtt.settings().model_dump(mode="json", exclude_none=True)
    cfg["lab"]["state_dir"] = str(tmp_path / "state")
    path = tmp_path / "labops.yaml"
    path.write_text(yaml.safe_dump(cfg))
    secret_file = str(sandbox.dir / "secrets" / "pve_token")
    subscriber = mqtt.subscribe()
    sandbox.control("telegram", "clear")

    state: Any = leaky(config=str(path), secret_file=secret_file, return_state=True)
    assert state.is_failed()
    texts = [m.get("text", "") for m in sandbox.control("telegram", "messages")["messages"]]
    assert any("Leaky" in t and "the answer quoted ***" in t for t in texts), texts
    assert not [t for t in texts if secret in t]
    received = subscriber.wait_for(1, timeout=10)
    payloads = [m.payload.decode() for m in received if m.topic.endswith("leaky/report")]
    assert payloads and "the answer quoted ***" in payloads[0], payloads
    assert not [p for p in payloads if secret in p]

    crashed: Any = leaky(config=str(path), secret_file=secret_file, crash=True, return_state=True)
    assert crashed.is_failed()
    run_id = crashed.state_details.flow_run_id
    assert run_id is not None
    messages = flow_run_logs(run_id, want="Traceback")
    tracebacks = [m for m in messages if "Traceback" in m]
    assert tracebacks and all("token=*** failed" in m for m in tracebacks), messages
    assert not [m for m in messages if secret in m], "a secret reached the run logs"


def test_labops_errors_survive_pickling() -> None:
    """Prefect pickles a failed task's exception into its state: every labops error comes back
    as itself, with its fields."""
    import pickle

    from labops.errors import (
        ApiError,
        AuthFailed,
        CommandTimeout,
        ConfigError,
        HostKeyRejected,
        MaybeApplied,
        Unreachable,
    )

    for err in (
        AuthFailed("proxmox", "token refused"),
        Unreachable("ssh:pve1", "connection refused"),
        HostKeyRejected("ssh:pve2", "changed key"),
        CommandTimeout("ssh:pve3", "no answer in 120 s"),
        ApiError("pbs", "datastore missing", 400),
        MaybeApplied("proxmox", "answer lost", None),
        ConfigError(["a: bad", "b: worse"]),
    ):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err)
        assert getattr(back, "status", None) == getattr(err, "status", None)
        assert getattr(back, "system", None) == getattr(err, "system", None)
