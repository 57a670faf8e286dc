"""Every documented setting reports its own name (TOML path and env variable) when it is wrong."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from extend_connector.config_file import render_config
from extend_connector.settings import SECTIONS, ConfigError, Settings, env_name, load_settings

# (toml section path, setting, a wrong value, words the message must contain)
BAD_VALUES: list[tuple[tuple[str, ...], str, object, str]] = [
    (("scope",), "orders", "off", "'on'"),
    (("scope",), "balances", "off", "'on'"),
    (("scope",), "products", "maybe", "'sync' or 'off'"),
    (("scope",), "customers", "both", "'from_extend', 'to_extend' or 'off'"),
    (("scope",), "prices", "yes", "'sync' or 'off'"),
    (("scope",), "default_customer_number", "", "at least 1 character"),
    (("scope",), "price_customer_numbers", 5, "valid list"),
    (("extend",), "base_url", "not a url", "valid URL"),
    (("extend",), "api_token", 5, "valid string"),
    (("extend",), "webhook_secret", 5, "valid string"),
    (("extend",), "verify_webhook_signatures", "perhaps", "valid boolean"),
    (("extend",), "warehouses", [], "at least 1 item"),
    (("extend",), "connect_timeout_seconds", 0, "greater than 0"),
    (("extend",), "read_timeout_seconds", -1, "greater than 0"),
    (("extend",), "max_in_flight", 0, "greater than or equal to 1"),
    (("extend",), "shared_rate_limit", "sometimes", "'auto', 'on' or 'off'"),
    (("extend",), "rate_limit_headroom", 0.3, "greater than or equal to 0.5"),
    (("extend", "dialect"), "auth_header", "", "at least 1 character"),
    (("extend", "dialect"), "auth_scheme", 5, "valid string"),
    (("extend", "dialect"), "page_param", "", "at least 1 character"),
    (("extend", "dialect"), "page_size_param", "", "at least 1 character"),
    (("extend", "dialect"), "page_size", 0, "greater than or equal to 1"),
    (("extend", "dialect"), "fields", {"Widget": {"a": "b"}}, "unknown model `Widget`"),
    (
        ("extend", "dialect"),
        "fields",
        {"Product": {"itemNo": "x"}},
        "`fields.Product.itemNo`: Product has no field",
    ),
    (("extend", "dialect"), "envelope", "xml", "'body' or 'headers'"),
    (("extend", "dialect"), "changed_since_param", "", "at least 1 character"),
    (("extend", "dialect"), "product_numbers_param", "", "at least 1 character"),
    (("extend", "dialect"), "warehouse_param", "", "at least 1 character"),
    (("extend", "dialect"), "max_url_length", 10, "greater than or equal to 256"),
    (("extend", "dialect"), "rate_limit_limit_header", "", "at least 1 character"),
    (("extend", "dialect"), "rate_limit_remaining_header", "", "at least 1 character"),
    (("extend", "dialect"), "rate_limit_reset_header", "", "at least 1 character"),
    (("extend", "dialect"), "request_id_header", "", "at least 1 character"),
    (("extend", "dialect"), "status_param", "", "at least 1 character"),
    (("extend", "dialect"), "order_number_external_param", "", "at least 1 character"),
    (("extend", "dialect"), "customer_number_param", "", "at least 1 character"),
    (("extend", "dialect"), "changed_since_format", "local", "'offset' or 'utc'"),
    (("extend", "dialect"), "timezone", "Mars/Olympus", "IANA time zone"),
    (("extend", "dialect"), "ordered_by_change_date", "often", "valid boolean"),
    (("extend", "dialect"), "order_lookup_window", "sometimes", "valid boolean"),
    (("extend", "dialect"), "clock_spread_seconds", -1, "greater than or equal to 0"),
    (("extend", "dialect"), "paths", {"get_order": "GET /CustomerOrders"}, "{orderNumber}"),
    (
        ("extend", "dialect"),
        "rate_limit_groups",
        {"fetch_all": "heavy"},
        "operation -> non-empty group",
    ),
    (
        ("extend", "dialect"),
        "rate_limits",
        {"standard": "300 per minute"},
        "`standard`: expected `LIMIT/SECONDS`",
    ),
    (("webshop",), "adapter", "shopify", "'headless'"),
    (("webshop",), "api_token", 5, "valid string"),
    (("webshop",), "webhook_url", "ftp://x", "URL scheme should be 'http' or 'https'"),
    (("webshop",), "webhook_secret", "plain", "whsec_"),
    (("webshop",), "stock_figure", "max", "'sum' or 'per_warehouse'"),
    (("webshop",), "stale_after_seconds", 0, "greater than 0"),
    (("store",), "data_dir", 5, "valid path"),
    (("store",), "database_url", "mysql://x", "sqlite:///PATH"),
    (("store",), "pool_size", 1, "greater than or equal to 2"),
    (("store",), "max_overflow", -1, "greater than or equal to 0"),
    (("engine",), "role", "both", "'all', 'web' or 'worker'"),
    (("engine",), "application_version", "", "at least 1 character"),
    (("engine",), "executor_id", "", "at least 1 character"),
    (("engine",), "worker_concurrency", 0, "greater than or equal to 1"),
    (("engine",), "transient_db_retry_minutes", 0, "greater than 0"),
    (("engine",), "stuck_order_minutes", -1, "greater than 0"),
    (("engine",), "heartbeat_seconds", 0, "greater than 0"),
    (("engine",), "executor_dead_seconds", 20, "at least 3 x engine.heartbeat_seconds"),
    (("engine",), "watchdog_minutes", 0, "greater than 0"),
    (("engine",), "finished_job_retention_days", 0, "greater than 0"),
    (("admin",), "password_hash", "hunter2", "admin hash-password"),
    (("admin",), "session_hours", 0, "greater than 0"),
    (("store",), "outbox_retention_days", -1, "greater than 0"),
    (("store",), "inbox_retention_days", 0, "greater than 0"),
    (("store",), "resolved_failure_retention_days", "soon", "valid number"),
    (("server",), "host", "", "at least 1 character"),
    (("server",), "port", 70000, "less than or equal to 65535"),
    (("server",), "webhook_max_body_bytes", 10, "greater than or equal to 1024"),
    (("server",), "max_body_bytes", 10, "greater than or equal to 1024"),
    (("server",), "header_timeout_seconds", 0, "greater than 0"),
    (("server",), "body_timeout_seconds", 7200, "less than or equal to 3600"),
    (("server",), "keepalive_timeout_seconds", 0, "greater than or equal to 1"),
    (("server",), "max_connections", 3, "greater than or equal to 16"),
    (("server",), "worker_port", 0, "greater than or equal to 1"),
    (("server",), "processes", 0, "greater than or equal to 1"),
    (("sync",), "overlap_seconds", -1, "greater than or equal to 0"),
    (("sync",), "orders_sweep_minutes", 0, "greater than 0"),
    (("sync",), "balances_sweep_minutes", 0, "greater than 0"),
    (("sync",), "products_sweep_minutes", 0, "greater than 0"),
    (("sync",), "customers_sweep_minutes", 0, "greater than 0"),
    (("sync",), "prices_full_refresh_minutes", 0, "greater than 0"),
    (("sync",), "prices_active_refresh_minutes", 0, "greater than 0"),
    (("sync",), "balance_debounce_seconds", -1, "greater than or equal to 0"),
    (("sync",), "balance_max_delay_seconds", 0, "greater than 0"),
    (("sync",), "balance_apply_notification_value", "sometimes", "valid boolean"),
    (("log",), "level", "verbose", "'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
    (("log",), "format", "xml", "'json' or 'console'"),
    (("alerts",), "webhook_url", "ftp://x", "URL scheme should be 'http' or 'https'"),
    (("alerts",), "webhook_secret", "plain", "whsec_"),
    (("alerts",), "smtp_host", 5, "valid string"),
    (("alerts",), "smtp_port", 0, "greater than or equal to 1"),
    (("alerts",), "smtp_starttls", "perhaps", "valid boolean"),
    (("alerts",), "smtp_username", 5, "valid string"),
    (("alerts",), "smtp_password", 5, "valid string"),
    (("alerts",), "email_from", 5, "valid string"),
    (("alerts",), "email_to", ["ops@example.com"], "needs alerts.smtp_host"),
    (("alerts",), "check_seconds", 0, "greater than 0"),
    (("alerts",), "unreachable_minutes", 0, "greater than 0"),
    (("alerts",), "stale_minutes", -1, "greater than 0"),
    (("alerts",), "outbox_pending", 0, "greater than or equal to 1"),
    (("alerts",), "outbox_age_minutes", 0, "greater than 0"),
    (("store",), "sync_run_retention_days", 0, "greater than 0"),
    (("webshop", "vendure"), "admin_api_url", "not a url", "valid URL"),
    (("webshop", "vendure"), "username", "", "at least 1 character"),
    (("webshop", "vendure"), "password", 5, "valid string"),
    (("webshop", "vendure"), "channel_token", 5, "valid string"),
    (("webshop", "vendure"), "stock_locations", "x", "valid dictionary"),
    (("webshop", "vendure"), "sum_location", 5, "valid string"),
    (("webshop", "vendure"), "language_code", "e", "at least 2 characters"),
    (("webshop", "vendure"), "poll_seconds", 7, "must divide a minute or an hour"),
    (("webshop", "vendure"), "timeout_seconds", 0, "greater than 0"),
]


def _documented() -> set[tuple[tuple[str, ...], str]]:
    found: set[tuple[tuple[str, ...], str]] = set()

    def walk(path: tuple[str, ...], model: type) -> None:
        for name, info in model.model_fields.items():  # type: ignore[attr-defined]
            ann = info.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                walk((*path, name), ann)
            else:
                found.add((path, name))

    for section, model in SECTIONS.items():
        walk((section,), model)
    return found


def test_every_setting_has_an_error_message_test() -> None:
    covered = {(path, name) for path, name, _, _ in BAD_VALUES}
    assert covered == _documented()


def _nest(path: tuple[str, ...], name: str, value: object) -> dict[str, object]:
    data: dict[str, object] = {name: value}
    for part in reversed(path):
        data = {part: data}
    return data


def _toml(data: dict[str, object], prefix: str = "") -> str:
    import json

    lines, tables = [], []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    out = ""
    if prefix and lines:
        out += f"[{prefix}]\n"
    out += "\n".join(lines) + ("\n" if lines else "")
    for key, value in tables:
        out += _toml(value, f"{prefix}.{key}" if prefix else key)
    return out


@pytest.mark.parametrize(
    ("path", "name", "value", "expect"),
    BAD_VALUES,
    ids=[".".join((*p, n)) for p, n, _, _ in BAD_VALUES],
)
def test_bad_value_in_file_names_the_setting(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    path: tuple[str, ...],
    name: str,
    value: object,
    expect: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.toml"
    cfg.write_text(_toml(_nest(path, name, value)))
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, env=False)
    message = str(info.value)
    dotted = ".".join((*path, name))
    assert dotted in message
    assert env_name((*path, name)) in message
    assert expect in message
    if "secret" in name or "token" in name:
        assert repr(value) not in message.split("[env")[1]


def test_env_overrides_file_and_splits_lists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[extend]\nwarehouses = ["A"]\nwebhook_secret = "from-file"\n')
    monkeypatch.setenv("EXTEND_CONNECTOR_EXTEND__WEBHOOK_SECRET", "from-env")
    monkeypatch.setenv("EXTEND_CONNECTOR_EXTEND__WAREHOUSES", "B, C")
    s = load_settings(cfg)
    assert s.extend.webhook_secret.get_secret_value() == "from-env"
    assert s.extend.warehouses == ["B", "C"]


def test_bad_env_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EXTEND_CONNECTOR_SERVER__PORT", "eighty")
    with pytest.raises(ConfigError, match=r"server\.port \[env EXTEND_CONNECTOR_SERVER__PORT\]"):
        load_settings()


def test_unknown_setting_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[extend]\nbase_ulr = 'http://x'\n")
    with pytest.raises(ConfigError, match=r"extend\.base_ulr .*unknown setting"):
        load_settings(cfg, env=False)


def test_missing_explicit_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[extend\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)


def test_scale_out_role_needs_postgres(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[engine]\nrole = "worker"\n')
    with pytest.raises(ConfigError, match="postgresql"):
        load_settings(cfg, env=False)
    cfg.write_text('[engine]\nrole = "worker"\n[store]\ndatabase_url = "postgresql://u@h/db"\n')
    s = load_settings(cfg, env=False)
    assert s.store.url == "postgresql+psycopg://u@h/db"


def test_several_web_processes_need_role_web(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    pg = '[store]\ndatabase_url = "postgresql://u@h/db"\n'
    cfg.write_text("[server]\nprocesses = 2\n" + pg)
    with pytest.raises(ConfigError, match=r"server\.processes = 2 needs engine\.role = `web`"):
        load_settings(cfg, env=False)
    for role in ("web", "worker"):  # a worker ignores it, as it ignores server.port
        cfg.write_text(f'[server]\nprocesses = 2\n[engine]\nrole = "{role}"\n' + pg)
        assert load_settings(cfg, env=False).server.processes == 2


def test_debounce_window_cross_check(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[sync]\nbalance_debounce_seconds = 5\nbalance_max_delay_seconds = 1\n")
    with pytest.raises(ConfigError, match="balance_max_delay_seconds"):
        load_settings(cfg, env=False)


def test_rate_limits_merge_with_defaults_and_cover_every_group(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[extend.dialect.rate_limits]\nstandard = "20/2"\n')
    s = load_settings(cfg, env=False)
    assert s.extend.dialect.parsed_rate_limits == {
        "standard": (20, 2.0),
        "heavy": (60, 60.0),
        "write": (120, 60.0),
    }
    for bad, words in (
        ('"0/60"', "limit >= 1"),
        ('"10/0"', "seconds > 0"),
        ('"10"', "LIMIT/SECONDS"),
    ):
        cfg.write_text(f"[extend.dialect.rate_limits]\nheavy = {bad}\n")
        with pytest.raises(ConfigError, match=r"extend\.dialect\.rate_limits") as info:
            load_settings(cfg, env=False)
        assert words in str(info.value)
    # A group named in rate_limit_groups needs a limit.
    cfg.write_text('[extend.dialect.rate_limit_groups]\nget_order = "orders"\n')
    with pytest.raises(
        ConfigError,
        match=r"extend\.dialect\.rate_limits .*group\(s\) orders used in rate_limit_groups",
    ):
        load_settings(cfg, env=False)
    cfg.write_text(
        '[extend.dialect.rate_limit_groups]\nget_order = "orders"\n'
        '[extend.dialect.rate_limits]\norders = "30/10"\n'
    )
    assert load_settings(cfg, env=False).extend.dialect.parsed_rate_limits["orders"] == (30, 10.0)


def test_shared_rate_limit_auto_follows_the_database(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("")
    assert not load_settings(cfg, env=False).shared_rate_limit_on  # SQLite: one process
    cfg.write_text('[store]\ndatabase_url = "postgresql://u@h/db"\n')
    assert load_settings(cfg, env=False).shared_rate_limit_on
    cfg.write_text(
        '[extend]\nshared_rate_limit = "off"\n[store]\ndatabase_url = "postgresql://u@h/db"\n'
    )
    assert not load_settings(cfg, env=False).shared_rate_limit_on
    cfg.write_text('[extend]\nshared_rate_limit = "on"\n')
    assert load_settings(cfg, env=False).shared_rate_limit_on


def test_rendered_config_round_trips(tmp_path: Path) -> None:
    text = render_config(
        scope={"products": "off", "customers": "off", "prices": "off"},
        warehouses=["Main", "Store 2"],
        default_customer="9000",
    )
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    s = load_settings(cfg, env=False)
    assert s.scope.products.value == "off"
    assert s.scope.default_customer_number == "9000"
    assert s.extend.warehouses == ["Main", "Store 2"]
    assert s == load_settings(cfg, env=False)
    assert isinstance(Settings(), Settings)
    # Dictionaries are written as inline tables: uncommented, they are valid settings.
    line = next(x for x in text.splitlines() if x.startswith("# rate_limits = "))
    cfg.write_text(text.replace(line, line.removeprefix("# ").replace('"300/60"', '"30/6"')))
    assert load_settings(cfg, env=False).extend.dialect.parsed_rate_limits["standard"] == (30, 6.0)


def test_the_pool_settings_bound_a_process_postgresql_connections() -> None:
    from extend_connector.store.database import Database

    settings = Settings.model_validate(
        {
            "store": {
                "database_url": "postgresql://u@db.localhost/x",
                "pool_size": 4,
                "max_overflow": 2,
            }
        }
    )
    db = Database(
        settings.store.url,
        pool_size=settings.store.pool_size,
        max_overflow=settings.store.max_overflow,
    )
    pool = db.engine.pool
    assert (pool.size(), pool._max_overflow) == (4, 2)  # type: ignore[attr-defined]
    db.engine.dispose()


def test_log_level_is_case_insensitive(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[log]\nlevel = "debug"\nformat = "console"\n')
    settings = load_settings(path, env=False)
    assert (settings.log.level, settings.log.format) == ("DEBUG", "console")


@pytest.mark.parametrize(
    ("vendure", "extra", "expect"),
    [
        ({"password": "pw"}, {}, "webshop.vendure.admin_api_url is required"),
        ({"admin_api_url": "http://127.0.0.1:3000/admin-api"}, {}, "webshop.vendure.password"),
        (
            {"admin_api_url": "http://127.0.0.1:3000/admin-api", "password": "pw"},
            {"stock_figure": "per_warehouse"},
            "no Vendure stock location for warehouse 'MainWarehouse'",
        ),
        (
            {
                "admin_api_url": "http://127.0.0.1:3000/admin-api",
                "password": "pw",
                "stock_locations": {"MainWarehouse": "A"},
            },
            {},
            "needs webshop.stock_figure = `per_warehouse`",
        ),
    ],
)
def test_a_vendure_shop_configured_half_way_is_refused_naming_the_setting(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    vendure: dict[str, object],
    extra: dict[str, object],
    expect: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.toml"
    cfg.write_text(_toml({"webshop": {"adapter": "vendure", **extra, "vendure": vendure}}))
    with pytest.raises(ConfigError, match=re.escape(expect)):
        load_settings(cfg, env=False)
