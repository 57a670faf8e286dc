"""`extend-connector check --online`: is everything the configuration names reachable, as it says?

One finding per thing checked, each naming the setting to change when it fails:

- the database: reachable and migrated to this version (read only: nothing is created or
  migrated, like `status`);
- Extend: one cheap read per rate-limit group of the dialect (a list read of one record, or in
  a group without one a read by key of a made-up record, which Extend should answer 404), through
  the real client and its rate budget; a group with only writes is reported as not tried (a check
  never writes to Extend);
- the shop: with the headless adapter and `webshop.webhook_url`, a signed `ping` event (Standard
  Webhooks, as every event) that the shop should answer with 2xx; the Vendure adapter logs in and
  looks up its stock locations (`check` does that even without `--online`).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx2

from extend_connector.extend import ExtendClient
from extend_connector.settings import Settings
from extend_connector.store import current_revision, head_revision
from extend_connector.webshop import EventType, HeadlessWebshop, ShopEvent, WebshopError


@dataclass(frozen=True, kw_only=True, slots=True)
class Finding:
    ok: bool
    what: str  # what was checked
    detail: str  # what was seen
    setting: str | None = None  # what to change when not ok

    def line(self) -> str:
        if self.ok:
            return f"ok    {self.what}: {self.detail}"
        where = f"{self.setting}: " if self.setting else ""
        return f"FAIL  {self.what}: {where}{self.detail}"


def database(settings: Settings) -> Finding:
    """The connector's database as the service left it: reachable and at this version's
    revision. Read only: never creates a file in the wrong folder, never migrates (also what the
    read-only commands `status` and `failures list/show` require before they read)."""
    where = settings.store.url
    setting = "store.database_url" if settings.store.database_url is not None else "store.data_dir"
    what = "database"
    try:
        revision = current_revision(where)
    except Exception as exc:  # any driver error: the finding names it
        return Finding(
            ok=False,
            what=what,
            setting=setting,
            detail=f"cannot read the database {where}: {type(exc).__name__}: {exc}"[:300],
        )
    if revision is None:
        return Finding(
            ok=False,
            what=what,
            setting=setting,
            detail=f"no connector database at {where}: run this where the service runs, or "
            "point the setting at its database (nothing was created)",
        )
    if revision != head_revision():
        return Finding(
            ok=False,
            what=what,
            setting=setting,
            detail=f"the database {where} is at revision {revision}, this version needs "
            f"{head_revision()}: start the service or run `extend-connector db upgrade` first",
        )
    return Finding(ok=True, what=what, detail=f"{where} at revision {revision} (current)")


MADE_UP = "extend-connector-check"  # the record a read by key asks for: Extend should say 404


def _reads_by_group(client: ExtendClient) -> Mapping[str, str | None]:
    """Rate-limit group -> the read to try in it: a list read if the group has one, else a read
    by key (of a made-up record); None: the group has writes only."""
    groups: dict[str, str | None] = {}
    for op, endpoint in client.dialect.endpoints.items():
        groups.setdefault(endpoint.group, None)
        if endpoint.is_write:
            continue
        chosen = groups[endpoint.group]
        if chosen is None or (
            "{" in client.dialect.endpoint(chosen).path and "{" not in endpoint.path
        ):
            groups[endpoint.group] = op
    return groups


async def extend(
    settings: Settings, *, transport: httpx2.AsyncBaseTransport | None = None
) -> list[Finding]:
    client = ExtendClient.from_settings(settings, transport=transport)
    findings = []
    try:
        for group, op in sorted(_reads_by_group(client).items()):
            what = f"Extend, rate-limit group {group}"
            if op is None:
                findings.append(
                    Finding(
                        ok=True,
                        what=what,
                        detail="writes only: not tried (a check never writes to Extend)",
                    )
                )
                continue
            endpoint = client.dialect.endpoint(op)
            call = f"{endpoint.method} {endpoint.path}"
            by_key = "{" in endpoint.path
            names = re.findall(r"\{(\w+)\}", endpoint.path)
            started = time.monotonic()
            try:
                response = await client.probe_get(
                    op,
                    path_values=dict.fromkeys(names, MADE_UP),
                    params=None if by_key else {client.dialect.page_size_param: "1"},
                )
            except httpx2.HTTPError as exc:
                findings.append(
                    Finding(
                        ok=False,
                        what=what,
                        setting="extend.base_url",
                        detail=f"{call}: no answer from {settings.extend.base_url} ({exc!r})",
                    )
                )
                continue
            ms = (time.monotonic() - started) * 1000
            status = response.status_code
            if response.is_success or (by_key and status == 404):
                note = " (a made-up record: not found, as it should be)" if by_key else ""
                findings.append(
                    Finding(
                        ok=True, what=what, detail=f"{call} answered {status} in {ms:.0f} ms{note}"
                    )
                )
            elif status in (401, 403):
                findings.append(
                    Finding(
                        ok=False,
                        what=what,
                        setting="extend.api_token (or extend.dialect.auth_header / auth_scheme)",
                        detail=f"{call} answered {status}: the credential is refused",
                    )
                )
            elif status == 404:
                findings.append(
                    Finding(
                        ok=False,
                        what=what,
                        setting=f"extend.base_url (or extend.dialect.paths.{op})",
                        detail=f"{call} answered 404: no such endpoint there",
                    )
                )
            else:
                findings.append(
                    Finding(
                        ok=False,
                        what=what,
                        setting=None if status >= 500 else f"extend.dialect (operation {op})",
                        detail=f"{call} answered {status}: {response.text[:200]}",
                    )
                )
    finally:
        await client.aclose()
    return findings


async def shop(
    settings: Settings, *, transport: httpx2.AsyncBaseTransport | None = None
) -> list[Finding]:
    if settings.webshop.adapter == "vendure":
        from extend_connector.webshop import vendure

        adapter = vendure.from_settings(settings)
        try:
            problems = await adapter.check()
        finally:
            await adapter.aclose()
        if not problems:
            return [
                Finding(
                    ok=True,
                    what="shop (Vendure)",
                    detail=f"logged in to {settings.webshop.vendure.admin_api_url}; stock "
                    "locations found",
                )
            ]
        return [Finding(ok=False, what="shop (Vendure)", detail=p) for p in problems]
    url = settings.webshop.webhook_url
    if url is None:
        return [
            Finding(
                ok=True,
                what="shop webhook",
                detail="webshop.webhook_url not set: events are kept, none is pushed",
            )
        ]
    hook = HeadlessWebshop(
        str(url), settings.webshop.webhook_secret.get_secret_value(), transport=transport
    )
    event = ShopEvent(
        event_id=f"ping_{uuid.uuid4().hex}",
        type=EventType.PING,
        key="ping",
        data={"note": "extend-connector check --online"},
        occurred_at=datetime.now(UTC),
    )
    try:
        await hook.deliver(event)
    except WebshopError as exc:
        status = f" ({exc.status})" if exc.status else ""
        setting = (
            "webshop.webhook_url"
            if exc.status is None or exc.status == 404
            else "webshop.webhook_secret (or the shop's handler)"
        )
        return [
            Finding(
                ok=False, what="shop webhook", setting=setting, detail=f"{exc}{status} at {url}"
            )
        ]
    finally:
        await hook.aclose()
    return [Finding(ok=True, what="shop webhook", detail=f"{url} took a signed ping")]


async def check_online(settings: Settings) -> list[Finding]:
    return [database(settings), *(await extend(settings)), *(await shop(settings))]
