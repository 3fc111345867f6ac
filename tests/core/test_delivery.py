"""Publishing takes a Delivery (lab, channels, metrics endpoint, UI), not the whole context: a
channel whose block could not be built is a failed delivery step, named; nothing else stops."""

from __future__ import annotations

from typing import Any

from blocks.delivery import Delivery, delivery_for
from labops.config import LabopsConfig
from labops.reports import Notification, OperationReport
from tasks.publish import push_report_metrics, send_notification


class Noisy(OperationReport):
    """A report that always has something to say."""

    def table(self) -> list[dict[str, Any]]:
        return []

    def markdown(self) -> str:
        return "# noisy"

    def notification(self) -> Notification:
        return Notification(title="Noisy", topic="noisy/report")


def test_a_lab_without_channels_delivers_nowhere_and_links_to_its_ui() -> None:
    config = LabopsConfig.model_validate({"lab": {"name": "home"}})
    delivery = delivery_for(config, "http://ui.lab:4200")
    assert (delivery.lab, delivery.telegram, delivery.mqtt, delivery.metrics) == (
        "home",
        None,
        None,
        None,
    )
    assert delivery.flow_run_url("abc") == "http://ui.lab:4200/runs/flow-run/abc"
    assert delivery_for(config).flow_run_url("abc") is None
    assert send_notification.fn(Noisy(operation="noisy"), delivery) is None
    assert push_report_metrics.fn(Noisy(operation="noisy"), delivery.metrics) is None


def test_a_channel_whose_block_could_not_be_built_fails_the_notify_step_naming_it() -> None:
    delivery = Delivery(lab="home", unavailable={"telegram": "no saved block named 'tg'"})
    state = send_notification.fn(Noisy(operation="noisy"), delivery)
    assert state is not None and state.is_failed()
    assert state.message == "telegram: no saved block named 'tg'"


def test_a_metrics_endpoint_whose_block_could_not_be_built_fails_the_push_step() -> None:
    state = push_report_metrics.fn(Noisy(operation="noisy"), None, "secret file gone")
    assert state is not None and state.is_failed() and state.message == "secret file gone"
