"""The console's own login: a scrypt password hash from settings, a signed session cookie and a
CSRF token per session. The shop's /v1 token opens nothing here.

- Password: `scrypt$N$r$p$salt$hash` (base64), made by `extend-connector admin hash-password`;
  compared in constant time.
- Session: cookie `ec_admin` = `<expiry>.<session id>.<HMAC>`; HttpOnly, SameSite=Strict, and
  Secure when the request came over HTTPS. The HMAC key is derived from the password hash, so
  every web process accepts the same cookie and changing the password ends every session.
- CSRF: every POST carries `csrf` (form field) or `X-CSRF-Token` equal to HMAC(key, session id);
  SameSite=Strict already keeps other sites' forms out, the token also keeps out a page of the
  same site that is not the console.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

COOKIE = "ec_admin"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """The value for `admin.password_hash`."""
    if len(password) < 10:
        raise ValueError("a console password needs at least 10 characters")
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def password_matches(password: str, stored: str) -> bool:
    try:
        _, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


@dataclass(frozen=True, slots=True)
class Sessions:
    """Issues and checks session cookies and CSRF tokens for one password hash."""

    key: bytes
    lifetime_seconds: float

    @classmethod
    def for_hash(cls, password_hash: str, *, hours: float) -> Sessions:
        key = hashlib.sha256(b"extend-connector admin session\0" + password_hash.encode()).digest()
        return cls(key=key, lifetime_seconds=hours * 3600)

    def _sign(self, text: str) -> str:
        return hmac.new(self.key, text.encode(), hashlib.sha256).hexdigest()

    def issue(self, now: float | None = None) -> str:
        expires = int((now or time.time()) + self.lifetime_seconds)
        body = f"{expires}.{secrets.token_hex(16)}"
        return f"{body}.{self._sign(body)}"

    def session_id(self, cookie: str | None, now: float | None = None) -> str | None:
        """The session id of a valid, unexpired cookie, else None."""
        if not cookie or cookie.count(".") != 2:
            return None
        expires, sid, mac = cookie.split(".")
        if not hmac.compare_digest(mac, self._sign(f"{expires}.{sid}")):
            return None
        if not expires.isdigit() or int(expires) < (now or time.time()):
            return None
        return sid

    def csrf(self, sid: str) -> str:
        return self._sign(f"csrf.{sid}")

    def csrf_ok(self, sid: str, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token, self.csrf(sid))
