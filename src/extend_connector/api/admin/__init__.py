"""The operator's console at /admin: server-rendered pages (Jinja2, no JavaScript build, nothing
from a CDN) and the same operations as JSON under /admin/api. Behind its own login (auth.py);
off, with every page saying how to turn it on, until `admin.password_hash` is set.

Pages: overview (freshness, Extend, queues, outbox, failures), failures (filters, detail,
retry, fix-and-retry of a parked order, dismiss, bulk retry), orders (search, one order's
timeline). Every operation calls the same function the CLI does (`flows.failures`,
`flows.orders`), so the console, the CLI and the JSON API cannot disagree.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import structlog
from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from extend_connector.api.admin.auth import COOKIE, Sessions, password_matches
from extend_connector.api.deps import Context
from extend_connector.flows import alerts, failures, monitor, orders, runs
from extend_connector.flows.context import FlowContext
from extend_connector.flows.orders import timeline

log = structlog.get_logger("extend_connector.admin")

router = APIRouter(prefix="/admin", include_in_schema=False)
_templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
LOGIN_FAILED_PAUSE_SECONDS = 1.0
OFF_MESSAGE = (
    "The console is off: set admin.password_hash to the output of "
    "`extend-connector admin hash-password` and restart."
)


class NotLoggedIn(Exception):
    """A page asked without a valid session: to the login page (JSON: 401)."""


def _sessions(ctx: FlowContext) -> Sessions:
    secret = ctx.settings.admin.password_hash
    if secret is None:
        raise HTTPException(status_code=404, detail=OFF_MESSAGE)
    return Sessions.for_hash(secret.get_secret_value(), hours=ctx.settings.admin.session_hours)


async def session(request: Request, ctx: Context) -> str:
    """The session id of a logged-in request; POSTs must also carry the session's CSRF token."""
    sessions = _sessions(ctx)
    sid = sessions.session_id(request.cookies.get(COOKIE))
    if sid is None:
        raise NotLoggedIn
    if request.method == "POST":
        token = request.headers.get("x-csrf-token")
        if token is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")
        ):
            token = str((await request.form()).get("csrf") or "") or None
        if not sessions.csrf_ok(sid, token):
            log.warning("admin_csrf_refused", path=request.url.path)
            raise HTTPException(status_code=403, detail="missing or wrong CSRF token")
    return sid


Session = Annotated[str, Depends(session)]


def _page(request: Request, ctx: FlowContext, sid: str | None, name: str, **values: Any) -> str:
    csrf = None if sid is None else _sessions(ctx).csrf(sid)
    return _templates.get_template(name).render(
        request=request, csrf=csrf, path=request.url.path, **values
    )


def not_logged_in(request: Request, _: NotLoggedIn) -> Response:
    if request.url.path.startswith("/admin/api/"):
        return JSONResponse({"error": "log in at /admin/login first"}, status_code=401)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/admin/login?{urlencode({'next': target})}", status_code=303)


# --- login ------------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, ctx: Context, next: str = "/admin/") -> str:
    _sessions(ctx)
    return _page(request, ctx, None, "login.html", next=_safe_next(next), error=None)


def _safe_next(target: str) -> str:
    # Only back into the console: never an open redirect.
    return target if target.startswith("/admin/") and "//" not in target else "/admin/"


@router.post("/login")
async def login(
    request: Request,
    ctx: Context,
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/admin/",
) -> Response:
    sessions = _sessions(ctx)
    stored = ctx.settings.admin.password_hash
    assert stored is not None
    ok = await asyncio.to_thread(password_matches, password, stored.get_secret_value())
    if not ok:
        log.warning("admin_login_failed", client=request.client.host if request.client else None)
        await asyncio.sleep(LOGIN_FAILED_PAUSE_SECONDS)
        html = _page(
            request, ctx, None, "login.html", next=_safe_next(next), error="wrong password"
        )
        return HTMLResponse(html, status_code=401)
    log.info("admin_login", client=request.client.host if request.client else None)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        COOKIE,
        sessions.issue(),
        max_age=int(sessions.lifetime_seconds),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/admin",
    )
    return response


@router.post("/logout")
async def logout(sid: Session) -> Response:
    response = RedirectResponse("/admin/login", status_code=303)
    response.delete_cookie(COOKIE, path="/admin")
    return response


# --- overview ---------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
async def overview(request: Request, ctx: Context, sid: Session) -> str:
    snap = await asyncio.to_thread(failures.status_snapshot)
    state = await asyncio.to_thread(monitor.read, ctx)
    freshness = [
        {
            "point": point,
            "confirmed": at,
            "age": state.age_seconds(point),
            "stale_after": alerts.stale_threshold_seconds(ctx.settings, point),
        }
        for point, at in state.confirmed.items()
    ]
    return _page(
        request,
        ctx,
        sid,
        "overview.html",
        snap=snap,
        freshness=freshness,
        extend=state.reachability,
        extend_groups=state.reachability_groups,
        alerts_open=state.alerts,
    )


# --- failures ---------------------------------------------------------------------------------


def _filter(kind: str, reason: str, older_than_hours: str, show_all: str) -> failures.Filter:
    hours: float | None = None
    if older_than_hours.strip():
        try:
            hours = float(older_than_hours)
        except ValueError:
            raise HTTPException(status_code=422, detail="older than: a number of hours") from None
    return failures.Filter(
        include_resolved=bool(show_all),
        kind=kind.strip() or None,
        reason=reason.strip() or None,
        older_than=None if hours is None else timedelta(hours=hours),
    )


@router.get("/failures", response_class=HTMLResponse)
async def failures_page(
    request: Request,
    ctx: Context,
    sid: Session,
    kind: str = "",
    reason: str = "",
    older_than_hours: str = "",
    show_all: str = "",
    notice: str = "",
) -> str:
    where = _filter(kind, reason, older_than_hours, show_all)
    rows = await asyncio.to_thread(failures.list_failures, where=where, limit=500)
    return _page(
        request,
        ctx,
        sid,
        "failures.html",
        rows=rows,
        kinds=failures.replay_kinds(),
        form={
            "kind": kind,
            "reason": reason,
            "older_than_hours": older_than_hours,
            "show_all": show_all,
        },
        notice=notice,
    )


@router.get("/failures/{failure_id}", response_class=HTMLResponse)
async def failure_page(
    request: Request, ctx: Context, sid: Session, failure_id: int, notice: str = "", error: str = ""
) -> Response:
    try:
        f = await asyncio.to_thread(failures.get, failure_id)
    except failures.UnknownFailure as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    lines = (f.payload.get("lines") or []) if f.kind == orders.FAILURE_KIND else []
    stored = (
        await asyncio.to_thread(timeline.timeline, f.key) if f.kind == orders.FAILURE_KIND else None
    )
    html = _page(
        request,
        ctx,
        sid,
        "failure.html",
        f=f,
        order=stored,
        lines=lines or ((stored.payload.get("lines") or []) if stored else []),
        address_fields=orders.ADDRESS_FIELDS,
        notice=notice,
        error=error,
    )
    return HTMLResponse(html)


async def _retry(failure_id: int, form: dict[str, str]) -> str:
    """A retry from the console: with the order fields a person changed, when any."""
    products = {
        int(name.removeprefix("line_")): value.strip()
        for name, value in form.items()
        if name.startswith("line_") and name.removeprefix("line_").isdigit() and value.strip()
    }
    customer = form.get("customer", "").strip() or None
    address = {
        name.removeprefix("address_"): value.strip()
        for name, value in form.items()
        if name.startswith("address_") and value.strip()
    }
    if products or customer or address:
        f = await asyncio.to_thread(failures.get, failure_id)
        if f.kind != orders.FAILURE_KIND:
            raise failures.FailureError(f"failure {failure_id} is not a parked order")
        await asyncio.to_thread(
            orders.amend_parked_order,
            f.key,
            products=products,
            customer_number=customer,
            delivery_address=address,
        )
    return await failures.retry(failure_id)


@router.post("/failures/{failure_id}/retry")
async def retry(request: Request, sid: Session, failure_id: int) -> Response:
    form = {k: str(v) for k, v in (await request.form()).items() if k != "csrf"}
    try:
        outcome = await _retry(failure_id, form)
    except failures.FailureError as exc:
        return _back(failure_id, error=f"not replayed: {exc}")
    return _back(failure_id, notice=outcome)


@router.post("/failures/{failure_id}/dismiss")
async def dismiss(sid: Session, failure_id: int, reason: Annotated[str, Form()] = "") -> Response:
    try:
        await asyncio.to_thread(failures.dismiss, failure_id, reason)
    except failures.FailureError as exc:
        return _back(failure_id, error=f"not dismissed: {exc}")
    return _back(failure_id, notice="dismissed")


@router.post("/failures/retry")
async def retry_many(
    sid: Session,
    kind: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
    older_than_hours: Annotated[str, Form()] = "",
) -> Response:
    where = _filter(kind, reason, older_than_hours, "")
    result = await failures.retry_matching(where)
    notice = f"{len(result.replayed)} replayed, {len(result.refused)} not replayed" + "".join(
        f"; {number}: {message}" for number, message in result.refused[:5]
    )
    query = urlencode(
        {"kind": kind, "reason": reason, "older_than_hours": older_than_hours, "notice": notice}
    )
    return RedirectResponse(f"/admin/failures?{query}", status_code=303)


def _back(failure_id: int, **message: str) -> Response:
    return RedirectResponse(f"/admin/failures/{failure_id}?{urlencode(message)}", status_code=303)


# --- orders -----------------------------------------------------------------------------------


@router.get("/orders", response_class=HTMLResponse)
async def orders_page(request: Request, ctx: Context, sid: Session, q: str = "") -> str:
    found = await asyncio.to_thread(timeline.search, q)
    return _page(request, ctx, sid, "orders.html", found=found, q=q)


@router.get("/orders/{shop_ref}", response_class=HTMLResponse)
async def order_page(request: Request, ctx: Context, sid: Session, shop_ref: str) -> str:
    story = await asyncio.to_thread(timeline.timeline, shop_ref)
    if story is None:
        raise HTTPException(status_code=404, detail=f"no order {shop_ref}")
    return _page(request, ctx, sid, "order.html", t=story)


# --- sync -------------------------------------------------------------------------------------


@router.get("/sync", response_class=HTMLResponse)
async def sync_page(
    request: Request, ctx: Context, sid: Session, notice: str = "", error: str = ""
) -> str:
    history = await asyncio.to_thread(runs.history)
    return _page(
        request,
        ctx,
        sid,
        "sync.html",
        points=runs.available(),
        history=history,
        notice=notice,
        error=error,
    )


@router.post("/sync")
async def start_sync(
    sid: Session,
    data_point: Annotated[str, Form()],
    full: Annotated[str, Form()] = "",
    dry_run: Annotated[str, Form()] = "",
) -> Response:
    try:
        run_id = await asyncio.to_thread(
            runs.request, data_point, full=bool(full), dry_run=bool(dry_run), by="console"
        )
    except runs.RunRefused as exc:
        return RedirectResponse(f"/admin/sync?{urlencode({'error': str(exc)})}", status_code=303)
    notice = f"run {run_id} queued: {data_point}" + (" (dry run)" if dry_run else "")
    return RedirectResponse(f"/admin/sync?{urlencode({'notice': notice})}", status_code=303)


# --- JSON -------------------------------------------------------------------------------------


@router.get("/api/failures")
async def api_failures(
    sid: Session,
    kind: str = "",
    reason: str = "",
    older_than_hours: str = "",
    show_all: str = "",
) -> list[dict[str, Any]]:
    where = _filter(kind, reason, older_than_hours, show_all)
    rows = await asyncio.to_thread(failures.list_failures, where=where, limit=500)
    return [f.as_json() for f in rows]


@router.post("/api/failures/{failure_id}/retry")
async def api_retry(request: Request, sid: Session, failure_id: int) -> JSONResponse:
    body = await request.json() if request.headers.get("content-length") not in (None, "0") else {}
    form = {
        **{f"line_{n}": str(sku) for n, sku in (body.get("products") or {}).items()},
        **({"customer": str(body["customer"])} if body.get("customer") else {}),
        **{f"address_{k}": str(v) for k, v in (body.get("address") or {}).items()},
    }
    try:
        outcome = await _retry(failure_id, form)
    except failures.FailureError as exc:
        return JSONResponse({"replayed": False, "error": str(exc)}, status_code=409)
    f = await asyncio.to_thread(failures.get, failure_id)
    return JSONResponse({"replayed": True, "message": outcome, "failure": f.as_json()})


@router.post("/api/failures/{failure_id}/dismiss")
async def api_dismiss(request: Request, sid: Session, failure_id: int) -> JSONResponse:
    body = await request.json()
    try:
        f = await asyncio.to_thread(failures.dismiss, failure_id, str(body.get("reason") or ""))
    except failures.FailureError as exc:
        return JSONResponse({"dismissed": False, "error": str(exc)}, status_code=409)
    return JSONResponse({"dismissed": True, "failure": f.as_json()})


@router.get("/api/sync")
async def api_sync_history(sid: Session) -> list[dict[str, Any]]:
    history = await asyncio.to_thread(runs.history)
    return [
        {
            "id": r.id,
            "dataPoint": r.data_point,
            "full": r.full,
            "dryRun": r.dry_run,
            "status": r.status,
            "requestedAt": r.requested_at.isoformat(),
            "startedAt": r.started_at.isoformat() if r.started_at else None,
            "finishedAt": r.finished_at.isoformat() if r.finished_at else None,
            "progress": r.progress,
            "result": r.result,
            "error": r.error,
        }
        for r in history
    ]


@router.post("/api/sync")
async def api_sync(request: Request, sid: Session) -> JSONResponse:
    body = await request.json()
    try:
        run_id = await asyncio.to_thread(
            runs.request,
            str(body.get("dataPoint") or ""),
            full=bool(body.get("full")),
            dry_run=bool(body.get("dryRun")),
            by="admin-api",
        )
    except runs.RunRefused as exc:
        return JSONResponse({"queued": False, "error": str(exc)}, status_code=409)
    return JSONResponse({"queued": True, "id": run_id}, status_code=202)
