"""Secrets are never printed, and a configuration whose secrets anyone could know refuses to start.

Issue #12, defects 6 and 7: `check` and configuration errors showed passwords in URLs; empty
secrets and the simulator's public defaults passed `check` and `run` even when the connector
faced a real network; a webhook signed with the empty key was accepted.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest
from click.testing import CliRunner

from extend_connector.cli import EXIT_CONFIG, main
from extend_connector.extend.webhooks import SignatureInvalid, verify_signature
from extend_connector.settings import (
    PUBLIC_SECRETS,
    ConfigError,
    EmbeddedSettings,
    env_name,
    load_settings,
)

# Decodes to 16 bytes, the shortest key accepted outside loopback.
OWN_WHSEC = "whsec_b3duLXNoYXJwLWtleS0xNg=="
OWN_SECRETS = (
    '[extend]\napi_token = "own-extend-token"\nwebhook_secret = "own-extend-webhook-secret"\n'
    f'[webshop]\napi_token = "own-shop-token-0123456789"\nwebhook_secret = "{OWN_WHSEC}"\n'
)


def _cfg(tmp_path: Path, text: str) -> Path:
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    return cfg


def _check(cfg: Path, command: str = "check") -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--config", str(cfg), command], catch_exceptions=False)
    return result.exit_code, result.output + (
        result.stderr if result.stderr_bytes is not None else ""
    )


# --- secrets are never printed ------------------------------------------------------------------


def test_check_shows_the_database_url_without_its_password(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, '[store]\ndatabase_url = "postgresql://app:s3cret-pw@db.internal/shop"\n')
    code, out = _check(cfg)
    assert code == 0, out
    assert "s3cret-pw" not in out
    assert "app:***@db.internal/shop" in out


def test_check_shows_the_extend_url_without_its_credentials(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, '[extend]\nbase_url = "http://erp-user:erp-pw@127.0.0.1:8765/api"\n')
    code, out = _check(cfg)
    assert code == 0, out
    assert "erp-pw" not in out
    assert "erp-user:***@127.0.0.1:8765/api" in out


@pytest.mark.parametrize(
    ("toml", "setting"),
    [
        (
            '[store]\ndatabase_url = "postgres://app:s3cret-pw@db.internal/shop"\n',
            "store.database_url",
        ),
        (
            '[extend]\nbase_url = "htp://erp-user:s3cret-pw@erp.example.com/api"\n',
            "extend.base_url",
        ),
        (
            '[webshop]\nwebhook_url = "ftp://shop:s3cret-pw@shop.example.com/hook"\n',
            "webshop.webhook_url",
        ),
    ],
)
def test_a_bad_url_is_echoed_without_its_password(tmp_path: Path, toml: str, setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_cfg(tmp_path, toml), env=False)
    message = str(info.value)
    assert setting in message
    assert "s3cret-pw" not in message
    assert ":***@" in message


def test_the_config_error_printed_by_the_cli_hides_the_password(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, '[store]\ndatabase_url = "postgres://app:s3cret-pw@db.internal/shop"\n')
    code, out = _check(cfg)
    assert code == EXIT_CONFIG
    assert "store.database_url" in out and "s3cret-pw" not in out


def test_check_never_shows_a_secret_value(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, OWN_SECRETS)
    code, out = _check(cfg)
    assert code == 0, out
    for value in (
        "own-extend-token",
        "own-extend-webhook-secret",
        "own-shop-token-0123456789",
        OWN_WHSEC,
    ):
        assert value not in out


# --- empty secrets: always refused ----------------------------------------------------------------

EMPTY = [
    (("extend", "api_token"), '[extend]\napi_token = ""\n'),
    (("extend", "webhook_secret"), '[extend]\nwebhook_secret = ""\n'),
    (("extend", "webhook_secret"), '[extend]\nwebhook_secret = "   "\n'),
    (("webshop", "api_token"), '[webshop]\napi_token = ""\n'),
    (("webshop", "webhook_secret"), '[webshop]\nwebhook_secret = "whsec_"\n'),
]


@pytest.mark.parametrize(("loc", "toml"), EMPTY, ids=[".".join(loc) for loc, _ in EMPTY])
def test_an_empty_secret_is_refused_naming_the_setting(
    tmp_path: Path, loc: tuple[str, str], toml: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_cfg(tmp_path, toml), env=False)
    message = str(info.value)
    assert ".".join(loc) in message
    assert env_name(loc) in message
    assert "empty" in message


@pytest.mark.parametrize("command", ["check", "run", "status"])
def test_every_command_refuses_an_empty_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    import extend_connector.service

    def started(*_: object, **__: object) -> None:
        raise AssertionError("the connector was built from unsafe settings")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(extend_connector.service, "Connector", started)
    code, out = _check(_cfg(tmp_path, '[extend]\nwebhook_secret = ""\n'), command)
    assert code == EXIT_CONFIG
    assert "extend.webhook_secret" in out


def test_an_empty_webhook_secret_is_allowed_when_verification_is_off(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, '[extend]\nwebhook_secret = ""\nverify_webhook_signatures = false\n')
    assert not load_settings(cfg, env=False).extend.verify_webhook_signatures
    code, out = _check(cfg)
    assert code == 0 and "NOT verified" in out


def test_an_empty_env_secret_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EXTEND_CONNECTOR_EXTEND__API_TOKEN", "")
    with pytest.raises(
        ConfigError, match=r"extend\.api_token \[env EXTEND_CONNECTOR_EXTEND__API_TOKEN\]"
    ):
        load_settings()


# --- public secrets outside loopback --------------------------------------------------------------

EXPOSED = [
    '[extend]\nbase_url = "https://erp.example.com/api"\n',
    '[server]\nhost = "0.0.0.0"\n',
    '[server]\nhost = "192.168.1.20"\n',
    '[webshop]\nwebhook_url = "https://shop.example.com/hooks/extend"\n',
]
PUBLIC_SETTINGS = (
    "extend.api_token",
    "extend.webhook_secret",
    "webshop.api_token",
    "webshop.webhook_secret",
)


@pytest.mark.parametrize("toml", EXPOSED)
def test_public_default_secrets_are_refused_outside_loopback(tmp_path: Path, toml: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_cfg(tmp_path, toml), env=False)
    message = str(info.value)
    for setting in PUBLIC_SETTINGS:
        assert setting in message
        assert env_name(tuple(setting.split("."))) in message
    assert "public" in message
    for value in PUBLIC_SECRETS:
        assert value not in message


@pytest.mark.parametrize("toml", EXPOSED)
def test_own_secrets_start_outside_loopback(tmp_path: Path, toml: str) -> None:
    section, _, rest = toml.partition("\n")
    # Merge the exposing setting into the own-secrets file (TOML forbids a repeated table).
    text = (
        OWN_SECRETS.replace(f"{section}\n", f"{section}\n{rest}", 1)
        if section in OWN_SECRETS
        else OWN_SECRETS + toml
    )
    code, out = _check(_cfg(tmp_path, text))
    assert code == 0, out


def test_one_public_secret_outside_loopback_is_named_alone(tmp_path: Path) -> None:
    text = OWN_SECRETS.replace('api_token = "own-extend-token"', 'api_token = "sim-token"').replace(
        "[extend]\n", '[extend]\nbase_url = "https://erp.example.com/api"\n'
    )
    code, out = _check(_cfg(tmp_path, text))
    assert code == EXIT_CONFIG
    assert "extend.api_token" in out
    assert "extend.webhook_secret" not in out and "webshop." not in out


def test_the_demo_secrets_are_public_too(tmp_path: Path) -> None:
    from extend_connector.demo import stack
    from extend_connector.simulator.config import SimulatorConfig, WebhookRegistration

    known = {
        SimulatorConfig().token,
        WebhookRegistration(callback_url="http://x").secret,
        stack.WEBHOOK_SECRET,
        stack.SHOP_TOKEN,
        stack.SHOP_WEBHOOK_SECRET,
    }
    assert known <= PUBLIC_SECRETS
    text = (
        f'[server]\nhost = "0.0.0.0"\n[extend]\napi_token = "own-extend-token"\n'
        f'webhook_secret = "{stack.WEBHOOK_SECRET}"\n'
        f'[webshop]\napi_token = "{stack.SHOP_TOKEN}"\nwebhook_secret = '
        f'"{stack.SHOP_WEBHOOK_SECRET}"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_settings(_cfg(tmp_path, text), env=False)
    message = str(info.value)
    assert "extend.webhook_secret" in message and "webshop.api_token" in message
    assert "webshop.webhook_secret" in message and "extend.api_token" not in message


@pytest.mark.parametrize(
    ("replace", "setting"),
    [
        ('api_token = "own-shop-token-0123456789"', "webshop.api_token"),
        (f'webhook_secret = "{OWN_WHSEC}"', "webshop.webhook_secret"),
    ],
)
def test_a_short_shop_secret_is_refused_outside_loopback(
    tmp_path: Path, replace: str, setting: str
) -> None:
    short = (
        'api_token = "short-token"'
        if "api_token" in replace
        else 'webhook_secret = "whsec_c2hvcnQ="'
    )
    text = '[server]\nhost = "0.0.0.0"\n' + OWN_SECRETS.replace(replace, short)
    with pytest.raises(ConfigError) as info:
        load_settings(_cfg(tmp_path, text), env=False)
    message = str(info.value)
    assert setting in message and "at least 16" in message
    # On loopback the same short secret is fine (tests, the demo).
    assert load_settings(_cfg(tmp_path, OWN_SECRETS.replace(replace, short)), env=False)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_defaults_on_loopback_still_start(tmp_path: Path, host: str) -> None:
    url_host = host if host.startswith("[") or ":" not in host else f"[{host}]"
    text = (
        f'[server]\nhost = "{host.strip("[]")}"\n'
        f'[extend]\nbase_url = "http://{url_host}:8765/api"\n'
        f'[webshop]\nwebhook_url = "http://{url_host}:9000/hook"\n'
    )
    assert load_settings(_cfg(tmp_path, text), env=False)
    assert EmbeddedSettings()


def test_init_for_a_real_extend_says_which_secrets_to_set(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    result = CliRunner().invoke(
        main,
        [
            "init",
            "--path",
            str(path),
            "--non-interactive",
            "--base-url",
            "https://erp.example.com/api",
        ],
    )
    assert result.exit_code == 0, result.output
    assert path.exists()
    assert "extend.api_token" in result.output and "webshop.webhook_secret" in result.output


# --- the webhook inbox never verifies with an empty key -------------------------------------------


def test_a_webhook_signed_with_the_empty_key_is_refused() -> None:
    raw = b'{"Id":"1","Attempt":1,"Notifications":[]}'
    header = "sha256=" + hmac.new(b"", raw, hashlib.sha256).hexdigest()
    with pytest.raises(SignatureInvalid, match=r"extend\.webhook_secret is empty"):
        verify_signature(raw, header, "")


def test_the_rate_budget_key_keeps_a_url_password_out_yet_tells_credentials_apart() -> None:
    from extend_connector.extend import budget_key
    from extend_connector.settings import Settings

    def key(url: str) -> str:
        return budget_key(Settings(extend={"base_url": url}))

    with_password = key("http://app:hunter2-secret@extend.localhost/api")
    assert "hunter2-secret" not in with_password
    assert with_password.startswith("http://app:***@extend.localhost/api#")
    assert with_password != key("http://app:other-secret@extend.localhost/api")
    # Keys of URLs without a password are as before (rows in extend_rate_buckets stay valid).
    plain = key("http://extend.localhost/api")
    assert plain.split("#")[0] == "http://extend.localhost/api"
