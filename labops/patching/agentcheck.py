"""The patch check of a VM without an SSH address, through its QEMU guest agent: the same
combined check command (:data:`labops.patching.hostcheck.CHECK_COMMAND`) and the same parser.

A VM whose agent is not running, a command that timed out or output that was cut leaves the
result unknown: ``problem`` is set, so the VM is "could not check", never "up to date".
"""

from __future__ import annotations

from datetime import date

from labops.errors import ApiError, CommandTimeout
from labops.guest_agent import NOT_RUNNING, AgentApi, AgentNotRunning, run_command, shell_argv
from labops.patching.hostcheck import CHECK_COMMAND, HostFacts, parse_check_output


def check_vm(
    api: AgentApi, node: str, vmid: int, today: date, *, timeout_s: float, poll_s: float = 0.5
) -> HostFacts:
    """Run the check command in VM ``vmid`` through its agent and parse it. Only reads."""
    try:
        result = run_command(
            api, node, vmid, shell_argv(CHECK_COMMAND), timeout_s=timeout_s, poll_s=poll_s
        )
    except AgentNotRunning:
        return HostFacts(problem=f"could not check: {NOT_RUNNING}")
    except CommandTimeout as exc:
        return HostFacts(problem=f"could not check: {exc}")
    except ApiError as exc:
        return HostFacts(problem=f"could not check: guest agent: {exc}")
    facts = parse_check_output(result.stdout, today)
    if result.truncated:  # the cut is the cause; the parser's complaint would only follow it
        facts.problem = "could not check: guest agent output truncated"
    return facts
