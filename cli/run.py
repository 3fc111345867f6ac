"""``labops run <flow>``: run one operation now and print its report."""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from typing import Any

import yaml
from prefect import tags
from prefect.exceptions import ParameterTypeError
from pydantic import BaseModel

from cli.common import RawDescriptionFormatter, add_config_option, load, progress, use_local_server
from deployments.catalog import FLOWS
from labops.errors import ConfigError, LabopsError, one_line
from labops.outcome import EXIT_CLEAN, EXIT_CONFIG, EXIT_FAILED, EXIT_FINDINGS, FailOn, Outcome
from labops.redact import redact
from labops.reports import OperationReport
from labops.scope import lab_tag

EXIT_CODES = f"""exit codes:
  {EXIT_CLEAN}  clean: the run did its job and found nothing at or above --fail-on
  {EXIT_FAILED}  failed: the run could not do its job (a failure, something it could not check)
  {EXIT_CONFIG}  config or argument error: nothing ran
  {EXIT_FINDINGS}  findings at or above --fail-on (default critical); the Prefect state is
     "Findings", the report names the highest severity"""


NO_SERVER = (
    "labops: no labops server running (start one with `labops server start`); "
    "this run uses a temporary server and will not show in the UI"
)


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "run",
        help="run one operation now",
        description="Run an operation as a Prefect flow and print its report. "
        f"Operations: {', '.join(FLOWS)}.",
        epilog=EXIT_CODES,
        formatter_class=RawDescriptionFormatter,
    )
    parser.add_argument("flow", metavar="FLOW", help="operation to run: " + ", ".join(FLOWS))
    add_config_option(parser)
    parser.add_argument("--dry-run", action="store_true", help="plan and report, change nothing")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--set",
        dest="params",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="flow parameter (VALUE is YAML: 3, true, [a, b]); dotted keys nest: window.hours=2",
    )
    parser.add_argument(
        "--fail-on",
        choices=[f.value for f in FailOn],
        default=FailOn.CRITICAL.value,
        help="lowest finding severity that exits 3 (default: critical; never: exit 0 when the "
        "run completed, whatever it found)",
    )
    parser.set_defaults(handler=handle)


def parse_params(items: list[str]) -> dict[str, Any]:
    """``["a=1", "b.c=[x, y]"]`` -> ``{"a": 1, "b": {"c": ["x", "y"]}}``."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = params
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {part} is already set to a value")
            node = child
        node[leaf.replace("-", "_")] = value
    return params


def load_flow(name: str) -> Any:
    target = FLOWS.get(name)
    if target is None:
        raise ConfigError(f"unknown operation {name!r} (known: {', '.join(FLOWS)})")
    module_name, attr = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise LabopsError(f"operation {name!r} is not available yet ({module_name})") from None
        raise
    return getattr(module, attr)


def handle(args: argparse.Namespace) -> int:
    path, config = load(args)
    flow = load_flow(args.flow)
    accepted = inspect.signature(flow.fn).parameters
    kwargs: dict[str, Any] = {"config": str(path)}
    if args.dry_run:
        if "dry_run" not in accepted:
            raise ConfigError(f"--dry-run: operation {args.flow!r} changes nothing anyway")
        kwargs["dry_run"] = True
    for key, value in parse_params(args.params).items():
        if key not in accepted or key in ("config", "dry_run"):
            names = ", ".join(p for p in accepted if p not in ("config", "dry_run")) or "none"
            raise ConfigError(f"--set {key}: not a parameter of {args.flow} (parameters: {names})")
        kwargs[key] = value
    api = use_local_server()
    progress(f"labops: running {args.flow} with {path}" + (" (dry run)" if args.dry_run else ""))
    if api is None:
        progress(NO_SERVER)
    # the lab's tag, as its deployments' runs carry it: its bridge and housekeeping find the run
    with tags("labops", lab_tag(config.lab.name)):
        state = flow(return_state=True, **kwargs)
    result = state.result(raise_on_failure=False)
    failed = state.is_failed() or state.is_crashed() or state.is_cancelled()
    if isinstance(result, ConfigError):
        for problem in result.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    if isinstance(result, ParameterTypeError):
        print(f"--set: {args.flow} refused its parameters: {result}", file=sys.stderr)
        return EXIT_CONFIG
    if isinstance(result, BaseModel):
        print_report(result, as_json=args.json)
    elif isinstance(result, BaseException):
        print(
            redact(f"{args.flow} failed: {type(result).__name__}: {one_line(result)}"),
            file=sys.stderr,
        )
    elif result is not None:
        print(result)
    why = f" ({redact(one_line(state.message))})" if failed and state.message else ""
    if isinstance(result, OperationReport):  # the outcome in one line: failures, else findings
        outcome = result.result()
        why = (
            f" ({redact(one_line(outcome.detail))})" if outcome.outcome is not Outcome.CLEAN else ""
        )
    progress(f"labops: {args.flow} finished: {state.name}{why}")
    return exit_code(state, result, FailOn(args.fail_on))


def exit_code(state: Any, result: Any, fail_on: FailOn) -> int:
    """The run's exit code: 1 when its state is not a completed one (failed, crashed,
    cancelled), else the report's outcome against ``--fail-on`` (0 or 3; 1 when failed)."""
    if not state.is_completed():
        return EXIT_FAILED
    if isinstance(result, OperationReport):
        return result.result().exit_code(fail_on)
    return EXIT_CLEAN


def print_report(report: BaseModel, *, as_json: bool) -> None:
    if as_json:
        print(report.model_dump_json(indent=2))
        return
    markdown = getattr(report, "markdown", None)
    print(markdown() if callable(markdown) else report.model_dump_json(indent=2))
