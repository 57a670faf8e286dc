"""Write a commented config file from the settings tree, and describe what a config will run."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic_core import PydanticUndefined

from extend_connector.redact import redact_url
from extend_connector.settings import PUBLIC_SECRETS, SECTIONS, Settings, env_name


def _toml_value(value: Any) -> str:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        # An inline table, so uncommenting the line gives a valid setting (not a Python repr).
        return (
            "{ "
            + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items())
            + " }"
        )
    if isinstance(value, Path):
        value = value.as_posix()
    return json.dumps(str(value))


def _default(model: type[BaseModel], name: str) -> Any:
    info = model.model_fields[name]
    if info.default is not PydanticUndefined:
        return info.default
    if info.default_factory is not None:
        return info.default_factory()  # type: ignore[call-arg]
    return None


def _render_section(
    lines: list[str], path: tuple[str, ...], model: type[BaseModel], overrides: dict[str, Any]
) -> None:
    doc = (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else ""
    lines.append("")
    lines.append(f"# {doc}" if doc else "#")
    lines.append(f"[{'.'.join(path)}]")
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            nested.append((name, annotation))
            continue
        value = overrides.get(name, _default(model, name))
        lines.append(f"# {info.description or ''}")
        lines.append(f"#   env: {env_name((*path, name))}")
        if value is None:
            lines.append(f"# {name} = ")
        elif name in overrides:
            lines.append(f"{name} = {_toml_value(value)}")
        else:
            lines.append(f"# {name} = {_toml_value(value)}")
    for name, sub in nested:
        _render_section(lines, (*path, name), sub, {})


def render_config(
    *,
    scope: dict[str, str],
    base_url: str | None = None,
    warehouses: list[str] | None = None,
    default_customer: str | None = None,
) -> str:
    """A TOML file listing every setting with its description; chosen values are set, the rest
    commented."""
    lines = [
        "# extend-connector configuration.",
        "# Every setting is listed with its default (commented out). Environment variables",
        "# EXTEND_CONNECTOR_<SECTION>__<SETTING> override this file.",
    ]
    chosen: dict[str, dict[str, Any]] = {"scope": dict(scope)}
    if default_customer:
        chosen["scope"]["default_customer_number"] = default_customer
    extend: dict[str, Any] = {}
    if base_url:
        extend["base_url"] = base_url
    if warehouses:
        extend["warehouses"] = warehouses
    chosen["extend"] = extend
    for section, model in SECTIONS.items():
        _render_section(lines, (section,), model, chosen.get(section, {}))
    return "\n".join(lines) + "\n"


def describe_plan(settings: Settings) -> str:
    """A human summary of what this configuration would run."""
    s = settings
    customers = {
        "from_extend": "fetched from Extend (webhooks + sweep every "
        f"{s.sync.customers_sweep_minutes:g} min)",
        "to_extend": "created in Extend from the shop (POST Customers, exactly once)",
        "off": f"not synced; orders use customer {s.scope.default_customer_number}",
    }[s.scope.customers.value]
    lines = [
        "configuration is valid",
        f"  Extend API      {redact_url(str(s.extend.base_url))} (auth header "
        f"{s.extend.dialect.auth_header})",
        f"  warehouses      {', '.join(s.extend.warehouses)}",
        f"  database        {redact_url(s.store.url)}",
        f"  engine          role={s.engine.role} version={s.engine.application_version} "
        f"executor={s.engine.executor_id}",
        f"  server          http://{s.server.host}:{s.server.port} (webhook inbox "
        "/webhooks/extend, read API /v1)",
        "  orders          on: shop -> POST CustomerOrders; progress by webhook, sweep every "
        f"{s.sync.orders_sweep_minutes:g} min",
        "  balances        on: AvailableBalanceChanged -> coalesced GET ProductAvailability "
        f"(debounce {s.sync.balance_debounce_seconds:g}s, max "
        f"{s.sync.balance_max_delay_seconds:g}s), sweep "
        f"every {s.sync.balances_sweep_minutes:g} min",
        f"  products        {'synced from Extend' if s.scope.products.value == 'sync' else 'off'}",
        f"  customers       {customers}",
        "  prices          "
        f"{'per-customer net prices from Extend' if s.scope.prices.value == 'sync' else 'off'}",
        f"  logs            {s.log.format} lines at {s.log.level} and above, to stdout",
        f"  alerts          {_describe_alerts(s)}",
        "  console         "
        + (
            f"/admin on the HTTP port, own login (session {s.admin.session_hours:g} h)"
            if s.admin.password_hash is not None
            else "off (set admin.password_hash: `extend-connector admin hash-password`)"
        ),
    ]
    lines.append(_describe_secrets(s))
    if not s.extend.verify_webhook_signatures:
        lines.append(
            "  WARNING         webhook signatures are NOT verified "
            "(extend.verify_webhook_signatures = false)"
        )
    return "\n".join(lines)


def _describe_alerts(s: Settings) -> str:
    a = s.alerts
    channels = []
    if a.webhook_url is not None:
        signed = "signed" if a.webhook_secret is not None else "unsigned"
        channels.append(f"webhook {redact_url(str(a.webhook_url))} ({signed})")
    if a.smtp_host and a.email_to:
        channels.append(f"e-mail via {a.smtp_host}:{a.smtp_port} to {len(a.email_to)} address(es)")
    where = ", ".join(channels) or "kept and counted, not sent (no alerts.webhook_url/smtp_host)"
    return (
        f"{where}; checked every {a.check_seconds:g}s (stale after {a.stale_minutes:g} min, "
        f"Extend unreachable {a.unreachable_minutes:g} min, outbox {a.outbox_pending} events or "
        f"{a.outbox_age_minutes:g} min)"
    )


def _describe_secrets(s: Settings) -> str:
    """Which secrets are set (never their values), and whether any is a public default."""
    secrets = {
        "extend.api_token": s.extend.api_token,
        "extend.webhook_secret": s.extend.webhook_secret,
        "webshop.api_token": s.webshop.api_token,
        "webshop.webhook_secret": s.webshop.webhook_secret,
    }
    public = [name for name, value in secrets.items() if value.get_secret_value() in PUBLIC_SECRETS]
    line = f"  secrets         {', '.join(secrets)} set (values never shown)"
    if public:
        # Settings refuse these outside loopback, so reaching here means everything is local.
        line += (
            "\n  NOTE            public defaults in use "
            f"({', '.join(public)}): fine on loopback only; "
            "set your own before Extend or the shop connects from elsewhere"
        )
    return line
