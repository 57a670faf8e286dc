"""The console's login pieces: scrypt hashes, signed expiring session cookies, CSRF tokens."""

from __future__ import annotations

import pytest

from extend_connector.api.admin.auth import Sessions, hash_password, password_matches


def test_a_password_matches_its_hash_only() -> None:
    stored = hash_password("correct horse battery", salt=b"0" * 16)
    assert stored.startswith("scrypt$16384$8$1$")
    assert password_matches("correct horse battery", stored)
    assert not password_matches("correct horse batterY", stored)
    assert not password_matches("correct horse battery", "scrypt$1$2$3$bad$bad")
    assert hash_password("correct horse battery") != stored  # a new salt each time
    with pytest.raises(ValueError, match="10 characters"):
        hash_password("short")


def test_a_session_cookie_is_signed_expires_and_dies_with_the_password() -> None:
    sessions = Sessions.for_hash(hash_password("first password!"), hours=1)
    cookie = sessions.issue(now=1000.0)
    sid = sessions.session_id(cookie, now=1000.0 + 3599)
    assert sid is not None
    assert sessions.session_id(cookie, now=1000.0 + 3601) is None  # expired
    expires, sid_part, mac = cookie.split(".")
    assert sessions.session_id(f"{int(expires) + 99999}.{sid_part}.{mac}", now=1000.0) is None
    assert sessions.session_id(f"{expires}.{sid_part}x.{mac}", now=1000.0) is None
    assert sessions.session_id("garbage", now=1000.0) is None
    assert sessions.session_id(None) is None
    other = Sessions.for_hash(hash_password("second password"), hours=1)
    assert other.session_id(cookie, now=1000.0) is None  # a new password ends every session


def test_csrf_tokens_belong_to_one_session() -> None:
    sessions = Sessions.for_hash(hash_password("first password!"), hours=1)
    token = sessions.csrf("session-a")
    assert sessions.csrf_ok("session-a", token)
    assert not sessions.csrf_ok("session-b", token)
    assert not sessions.csrf_ok("session-a", None)
    # One character changed (a token ending in "0" already, one time in 16, stays a change).
    assert not sessions.csrf_ok("session-a", token[:-1] + ("1" if token.endswith("0") else "0"))
