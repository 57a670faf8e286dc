"""Which alert conditions hold for a given state (flows/alerts.py), and the signed alert webhook
(notify/)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx2
from standardwebhooks.webhooks import Webhook

from extend_connector.flows import alerts, monitor
from extend_connector.flows.freshness import ReachabilityState
from extend_connector.notify import Notice, NotifyError, WebhookNotifier
from extend_connector.settings import EmbeddedSettings, Settings

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
SECRET = "whsec_YWxlcnQtc2VjcmV0LWZvci10ZXN0cw=="


def _settings(**alert: Any) -> Settings:
    return EmbeddedSettings(
        alerts={"stale_minutes": 30, "unreachable_minutes": 5, **alert},
        sync={"balances_sweep_minutes": 10, "orders_sweep_minutes": 20},
    )


def _snap(
    *,
    confirmed: dict[str, datetime | None] | None = None,
    reachable: bool = True,
    last_success: datetime | None = NOW,
    pending: int = 0,
    oldest: datetime | None = None,
) -> monitor.Snapshot:
    return monitor.Snapshot(
        at=NOW,
        queues={},
        outbox_pending=pending,
        outbox_oldest=oldest,
        failures={},
        confirmed=confirmed or {},
        alerts={},
        reachability=ReachabilityState(
            reachable=reachable,
            last_success_at=last_success,
            last_failure_at=NOW if not reachable else None,
            last_error=None if reachable else "TechnicalFailure: 503",
        ),
    )


def _keys(settings: Settings, snap: monitor.Snapshot, failures: Any = ()) -> list[str]:
    return [c.key for c in alerts.conditions(settings, snap, list(failures))]


def test_nothing_holds_in_a_healthy_state() -> None:
    snap = _snap(confirmed={"balances": NOW - timedelta(minutes=1), "orders": None})
    assert _keys(_settings(), snap) == []


def test_stale_past_the_threshold_or_twice_the_sweep_interval() -> None:
    settings = _settings()
    # balances: max(30, 2 x 10) = 30 min; orders: max(30, 2 x 20) = 40 min.
    assert alerts.stale_threshold_seconds(settings, "balances") == 30 * 60
    assert alerts.stale_threshold_seconds(settings, "orders") == 40 * 60
    snap = _snap(
        confirmed={
            "balances": NOW - timedelta(minutes=31),
            "orders": NOW - timedelta(minutes=35),
            "products": None,  # never confirmed: nothing to call stale yet
        }
    )
    conditions = alerts.conditions(settings, snap, [])
    assert [c.key for c in conditions] == ["stale:balances"]
    assert conditions[0].kind == "stale_data" and "31.0 min" in conditions[0].summary


def test_unreachable_only_after_the_configured_minutes() -> None:
    settings = _settings()
    recent = _snap(reachable=False, last_success=NOW - timedelta(minutes=4))
    assert _keys(settings, recent) == []
    long = _snap(reachable=False, last_success=NOW - timedelta(minutes=6))
    (condition,) = alerts.conditions(settings, long, [])
    assert condition.key == "extend_unreachable" and "503" in condition.summary


def test_outbox_backlog_by_count_or_age() -> None:
    settings = _settings(outbox_pending=100, outbox_age_minutes=10)
    assert _keys(settings, _snap(pending=99, oldest=NOW - timedelta(minutes=9))) == []
    assert _keys(settings, _snap(pending=100, oldest=NOW)) == ["outbox_backlog"]
    assert _keys(settings, _snap(pending=1, oldest=NOW - timedelta(minutes=11))) == [
        "outbox_backlog"
    ]


def test_one_condition_per_open_failure() -> None:
    failures = [
        SimpleNamespace(id=7, kind="order", key="R-1", reason="invalid_order", detail={}),
        SimpleNamespace(id=9, kind="shop_delivery", key="order:R-2", reason="shop_refused"),
    ]
    failures[1].detail = {"message": "the shop answered 400"}
    conditions = alerts.conditions(_settings(), _snap(), failures)
    assert [c.key for c in conditions] == ["failure:7", "failure:9"]
    assert "the shop answered 400" in conditions[1].summary


def _notice() -> Notice:
    return Notice(
        notice_id="alert-3-opened",
        event="alert.opened",
        alert_id=3,
        condition="stale:balances",
        kind="stale_data",
        summary="balances not confirmed",
        detail={"dataPoint": "balances"},
        opened_at=NOW,
    )


def test_alert_webhook_is_signed_like_the_shop_webhooks() -> None:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(204)

    WebhookNotifier(
        "http://ops.example/hook", SECRET, transport=httpx2.MockTransport(handler)
    ).send(_notice())
    (request,) = seen
    body = request.content.decode()
    payload = Webhook(SECRET).verify(body, dict(request.headers))
    assert payload["type"] == "alert.opened" and payload["alert"]["condition"] == "stale:balances"
    assert request.headers["webhook-id"] == "alert-3-opened"
    assert json.loads(body)["alert"]["openedAt"] == NOW.isoformat()


def test_an_alert_webhook_that_fails_raises_notify_error() -> None:
    notifier = WebhookNotifier(
        "http://ops.example/hook", transport=httpx2.MockTransport(lambda _: httpx2.Response(500))
    )
    try:
        notifier.send(_notice())
    except NotifyError as exc:
        assert "500" in str(exc)
    else:
        raise AssertionError("a 500 must raise NotifyError")


def test_alert_email_names_the_alert_and_a_dead_server_is_a_notify_error() -> None:
    from extend_connector.notify import SmtpNotifier, from_settings
    from support.processes import free_port

    settings = _settings(
        smtp_host="127.0.0.1", smtp_port=free_port(), email_to=["ops@example.com", "b@example.com"]
    )
    (notifier,) = from_settings(settings.alerts)
    assert isinstance(notifier, SmtpNotifier)
    message = notifier.message(_notice())
    assert message["Subject"] == "[extend-connector] ALERT: balances not confirmed"
    assert message["To"] == "ops@example.com, b@example.com"
    assert "stale:balances" in message.get_content()
    try:
        notifier.send(_notice())  # nothing listens on that port
    except NotifyError as exc:
        assert "not sent" in str(exc)
    else:
        raise AssertionError("a refused SMTP connection must raise NotifyError")


def test_a_gone_process_alerts_once_naming_it() -> None:
    from dataclasses import replace

    from extend_connector.flows.executors import Gone

    gone = Gone(
        executor_id="w2", role="worker", process="host-b:42", seen_at=NOW - timedelta(minutes=3)
    )
    snap = replace(_snap(), executors_gone=(gone,))
    found = alerts.conditions(_settings(), snap, [])
    assert [c.key for c in found] == ["executor_gone:w2"]
    assert found[0].kind == "executor_gone"
    assert "w2 (host-b:42) not heard of for 3.0 min" in found[0].summary
    assert _keys(_settings(), _snap()) == []
