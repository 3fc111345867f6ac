"""Apprise targets: real ntfy- and Gotify-compatible receivers on this machine, Apprise's own URL
parsing, secrets as references and masked, routing by operation and severity, long messages
split or truncated with the run's link kept, a channel down named once."""

from __future__ import annotations

from typing import Any

import apprise
import pytest

from blocks.delivery import Delivery, delivery_for
from labops.config import LabopsConfig
from labops.config.loader import parse_config
from labops.errors import ConfigError
from labops.notify.apprise import AppriseNotifier, fit_for
from labops.notify.format import fit_text
from labops.notify.settings import AppriseTarget
from labops.outcome import Severity
from labops.reports import Notification, OperationReport
from tasks.publish import send_notification
from tests.fixtures.receivers import GotifyReceiver, NtfyReceiver, Receiver

LINK = "http://ui.lab:4200/runs/flow-run/0b7e"


class Said(OperationReport):
    """A report whose notification is given."""

    message: Notification

    def table(self) -> list[dict[str, Any]]:
        return []

    def markdown(self) -> str:
        return "# said"

    def notification(self) -> Notification:
        return self.message.model_copy()


def _config(targets: list[dict[str, Any]]) -> LabopsConfig:
    return LabopsConfig.model_validate({"lab": {"name": "home"}, "systems": {"apprise": targets}})


def _report(
    operation: str = "backups",
    severity: Severity = Severity.WARNING,
    body: str = "2 guest(s) past their RPO: 101, 102",
) -> Said:
    note = Notification(title=f"{operation} on home", severity=severity, body=body, link=LINK)
    return Said(operation=operation, message=note)


def test_ntfy_and_gotify_receive_the_report_in_their_own_shapes(
    ntfy: NtfyReceiver, gotify: GotifyReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOTIFY_TOKEN", gotify.token)
    config = _config(
        [
            {"name": "phone", "url": f"ntfy://127.0.0.1:{ntfy.port}/labops-home"},
            {"name": "desk", "url": f"gotify://127.0.0.1:{gotify.port}/{{env:GOTIFY_TOKEN}}"},
        ]
    )
    assert send_notification.fn(_report(), delivery_for(config)) is None

    (pushed,) = ntfy.messages()
    assert pushed["topic"] == "labops-home" and pushed["title"] == "backups on home"
    assert pushed["message"].startswith("2 guest(s) past their RPO")
    assert pushed["message"].endswith(LINK)
    (posted,) = gotify.messages()
    assert gotify.received[0].headers["X-Gotify-Key"] == gotify.token
    assert posted["title"] == "backups on home" and posted["message"].endswith(LINK)


def test_a_channel_down_fails_the_notify_step_naming_it_once_with_the_token_masked(
    ntfy: NtfyReceiver, gotify: GotifyReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOTIFY_TOKEN", "Awrong-token.zz9")  # Gotify answers 401
    config = _config(
        [
            {"name": "phone", "url": f"ntfy://127.0.0.1:{ntfy.port}/labops-home"},
            {"name": "desk", "url": f"gotify://127.0.0.1:{gotify.port}/{{env:GOTIFY_TOKEN}}"},
        ]
    )
    report = _report(body="could not reach gotify://127.0.0.1/Awrong-token.zz9")
    state = send_notification.fn(report, delivery_for(config))
    assert state is not None and state.is_failed()
    message = state.message or ""
    assert message.startswith("apprise:desk: ") and message.count("apprise:") == 1
    assert "Awrong-token.zz9" not in message
    assert len(ntfy.messages()) == 1  # the other channel still delivered
    assert "Awrong-token.zz9" not in ntfy.messages()[0]["message"]  # masked in the message too


def test_routing_by_operation_and_minimum_severity(ntfy: NtfyReceiver) -> None:
    base = f"ntfy://127.0.0.1:{ntfy.port}"
    config = _config(
        [
            {"name": "pager", "url": f"{base}/pager", "min_severity": "critical"},
            {
                "name": "backups",
                "url": f"{base}/backups",
                "operations": ["backups", "patch-check"],
            },
            {"name": "all", "url": f"{base}/all"},
        ]
    )
    delivery = delivery_for(config)
    for report in (
        _report("backups", Severity.WARNING),
        _report("certificates", Severity.CRITICAL),
        _report("security-digest", Severity.OK),
        _report("patch_check", Severity.INFO),  # the report's name of the flow patch-check
    ):
        assert send_notification.fn(report, delivery) is None
    got = [(m["topic"], m["title"]) for m in ntfy.messages()]
    assert sorted(got) == sorted(
        [
            ("backups", "backups on home"),
            ("all", "backups on home"),
            ("pager", "certificates on home"),
            ("all", "certificates on home"),
            ("all", "security-digest on home"),
            ("backups", "patch_check on home"),
            ("all", "patch_check on home"),
        ]
    )


def test_a_fixed_notice_goes_where_the_problem_went() -> None:
    pager = AppriseTarget(name="pager", url="ntfy://h/p", min_severity=Severity.CRITICAL)
    delivery = Delivery(lab="home", apprise=(pager,))
    assert delivery.notifier("backups", Severity.OK).notifiers == []
    fixed = Notification(title="fixed", severity=Severity.OK, route_severity=Severity.CRITICAL)
    assert len(delivery.notifier("backups", fixed.route_severity).notifiers) == 1


def test_a_long_digest_is_split_for_ntfy_with_the_link_in_every_part(ntfy: NtfyReceiver) -> None:
    lines = [f"critical: CVE-2026-{i:05d} on host{i % 7} (exploited, exposed)" for i in range(120)]
    report = _report("security-digest", Severity.CRITICAL, "\n".join(lines))
    config = _config([{"name": "phone", "url": f"ntfy://127.0.0.1:{ntfy.port}/digest"}])
    assert send_notification.fn(report, delivery_for(config)) is None

    parts = ntfy.messages()
    assert len(parts) > 1
    assert not any(p.get("attachment") for p in parts)  # each a message, not an upload
    assert all(len(p["message"].encode()) <= 4096 and p["message"].endswith(LINK) for p in parts)
    assert [p["title"] for p in parts] == [
        f"security-digest on home ({i}/{len(parts)})" for i in range(1, len(parts) + 1)
    ]
    sent = "\n".join(p["message"].removesuffix(LINK).strip() for p in parts)
    assert all(line in sent for line in lines)  # nothing lost between parts


def test_truncate_keeps_one_message_and_the_link(gotify: GotifyReceiver, monkeypatch: Any) -> None:
    monkeypatch.setenv("GOTIFY_TOKEN", gotify.token)
    target = AppriseTarget(
        name="desk",
        url=f"gotify://127.0.0.1:{gotify.port}/{{env:GOTIFY_TOKEN}}",
        overflow="truncate",
    )
    body = "x " * 40000
    delivered = AppriseNotifier(target).send(
        Notification(title="digest", body=body, severity=Severity.INFO, link=LINK)
    )
    assert delivered.ok, delivered.detail
    (posted,) = gotify.messages()
    assert posted["message"].endswith("\u2026\n\n" + LINK)
    gotify_plugin = apprise.Apprise.instantiate("gotify://h/Atok")
    assert gotify_plugin is not None
    assert len(posted["message"]) <= gotify_plugin.body_maxlen


def test_services_without_titles_get_it_in_the_body_and_the_limit_of_the_service() -> None:
    telegram = apprise.Apprise.instantiate("tgram://123456789:AAbbCC/4242")
    assert telegram is not None
    note = Notification(title="backups on home", body="y\n" * 5000, link=LINK)
    title, parts = fit_for(telegram, note, split=True)
    assert title == "" and parts[0].startswith("backups on home\n\n")
    assert all(len(p) <= telegram.body_maxlen and p.endswith(LINK) for p in parts)


def test_fit_text_keeps_the_link_when_the_channel_is_tiny() -> None:
    assert fit_text("a" * 100, LINK, 30) == [LINK[:30]]
    assert fit_text("short", None, 100) == ["short"]
    assert fit_text("", LINK, 100) == [LINK]


def test_apprise_parses_the_url_an_unknown_scheme_is_a_failed_delivery() -> None:
    target = AppriseTarget(name="odd", url="nosuchservice://host/{env:HOME}")
    delivered = AppriseNotifier(target).send(Notification(title="t"))
    assert not delivered.ok and delivered.channel == "apprise:odd"
    assert "Apprise does not understand the URL nosuchservice://host/{env:HOME}" in delivered.detail


def test_a_missing_secret_reference_is_a_failed_delivery_naming_the_target() -> None:
    target = AppriseTarget(name="desk", url="gotify://127.0.0.1:9/{env:LABOPS_TEST_UNSET_TOKEN}")
    delivered = AppriseNotifier(target).send(Notification(title="t"))
    assert not delivered.ok
    assert (
        "apprise target desk" in delivered.detail and "LABOPS_TEST_UNSET_TOKEN" in delivered.detail
    )


@pytest.mark.parametrize(
    "url",
    [
        "ntfys://labops:hunter2@ntfy.example/labops",  # a password in clear
        "gotify://gotify.lab/{A1b2C3}",  # braces that are not a reference
        "ntfy.example/labops",  # no scheme
    ],
)
def test_the_config_refuses_secrets_in_clear_and_never_echoes_them(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"systems": {"apprise": [{"name": "x", "url": url}]}})
    assert "hunter2" not in str(caught.value.problems)


def test_a_target_names_one_destination_and_names_are_unique() -> None:
    with pytest.raises(ConfigError):
        parse_config({"systems": {"apprise": [{"name": "x"}]}})
    with pytest.raises(ConfigError):
        parse_config(
            {
                "systems": {
                    "apprise": [
                        {"name": "x", "url": "ntfy://a/b"},
                        {"name": "x", "url": "ntfy://a/c"},
                    ]
                }
            }
        )


def test_a_saved_prefect_notification_block_is_a_target_by_name(
    prefect_server: Any, ping_recorder: Receiver
) -> None:
    from prefect.blocks.notifications import MattermostWebhook
    from pydantic import SecretStr

    token = "mmHookToken4242"
    MattermostWebhook(
        hostname="127.0.0.1", port=ping_recorder.port, secure=False, token=SecretStr(token)
    ).save("labops-test-mm", overwrite=True)
    target = AppriseTarget(name="chat", prefect_block="mattermost-webhook/labops-test-mm")
    note = Notification(title="backups on home", body=f"hook {token} seen", link=LINK)
    delivered = AppriseNotifier(target).send(note)
    assert delivered.ok, delivered.detail
    assert token not in delivered.detail
    (posted,) = ping_recorder.received
    assert posted.method == "POST" and posted.path == f"/hooks/{token}"
    text = posted.json()["text"]
    assert text.endswith(LINK) and token not in text  # the block's secret is masked too

    gone = AppriseTarget(name="chat", prefect_block="mattermost-webhook/no-such-block")
    missing = AppriseNotifier(gone).send(note)
    assert not missing.ok and "no saved Prefect notification block" in missing.detail


def test_the_bridge_alerts_reach_the_apprise_targets_that_take_them() -> None:
    from blocks.factory import notifier_for

    config = _config(
        [
            {"name": "pager", "url": "ntfy://h/p", "min_severity": "critical"},
            {"name": "certs", "url": "ntfy://h/c", "operations": ["certificates"]},
        ]
    )
    alert = notifier_for(config, "backups", Severity.CRITICAL)
    assert [n.channel for n in alert.notifiers] == ["apprise:pager"]
    assert [n.channel for n in notifier_for(config).notifiers] == ["apprise:pager", "apprise:certs"]


def test_config_check_asks_apprise_about_each_target_and_sends_nothing(
    ntfy: NtfyReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cli.checks import Status, check_apprise_targets

    monkeypatch.setenv("LABOPS_TEST_NTFY_TOKEN", "tk_checkme0042")
    config = _config(
        [
            {
                "name": "phone",
                "url": f"ntfy://{{env:LABOPS_TEST_NTFY_TOKEN}}@127.0.0.1:{ntfy.port}/t",
            },
            {"name": "odd", "url": "nosuchservice://host/x"},
            {"name": "gone", "url": "gotify://h/{env:LABOPS_TEST_UNSET_TOKEN}"},
        ]
    )
    rows = {r.system: r for r in check_apprise_targets(config)}
    assert rows["apprise:phone"].status is Status.OK and "ntfy" in rows["apprise:phone"].detail
    assert (
        rows["apprise:phone"].endpoint
        == f"ntfy://{{env:LABOPS_TEST_NTFY_TOKEN}}@127.0.0.1:{ntfy.port}/t"
    )
    assert rows["apprise:odd"].status is Status.CONFIG_ERROR
    assert "LABOPS_TEST_UNSET_TOKEN" in rows["apprise:gone"].detail
    assert ntfy.received == []
