"""The operator's console in a real browser (Debian's chromium driven by Playwright), against
real `extend-connector simulator` and `extend-connector run` processes on loopback.

1. Nobody gets in without the console's own login: not anonymously, not with the shop's /v1
   token, and no POST without the session's CSRF token.
2. An order placed through /v1/orders appears and its timeline fills in as Extend reserves and
   picks it.
3. An order with an unknown SKU is parked; fixed in the console and retried, it reaches Extend
   exactly once.
4. A failure is dismissed with a reason.
5. A full dry-run sync of products is started from the console and watched to its end.
Screenshots of each page go to tests/artifacts/console/ (kept by CI's clone, not committed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
import sqlalchemy as sa

from acceptance.test_orders import TOKEN, Stack, dialect, make_stack  # noqa: F401 (fixtures)
from extend_connector.api.admin.auth import hash_password
from support.processes import CLI, wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PASSWORD = "console-password-1"
SHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "console"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)",
    ),
]


def _products_swept(stack: Stack) -> bool:
    engine = sa.create_engine(stack.db_url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            return bool(
                conn.execute(
                    sa.text("SELECT count(*) FROM cursors WHERE name = 'products'")
                ).scalar()
            )
    except sa.exc.OperationalError:  # not created yet
        return False
    finally:
        engine.dispose()


def _no_redirects(stack: Stack) -> httpx2.Client:
    return httpx2.Client(base_url=stack.url, timeout=30, follow_redirects=False)


def test_console_login_timeline_fix_and_retry_dismiss(make_stack: Any) -> None:  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    stack: Stack = make_stack(
        products="sync",
        extra_env={"EXTEND_CONNECTOR_ADMIN__PASSWORD_HASH": hash_password(PASSWORD)},
    )
    # Products synced, so an SKU missing locally is unknown (not merely not fetched yet).
    synced = subprocess.run(
        [*CLI, "sync", "products"],
        env={**os.environ, **stack.env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert _products_swept(stack)

    # 1. Refused without the console's own session.
    with _no_redirects(stack) as http:
        anonymous = http.get("/admin/failures")
        assert anonymous.status_code == 303 and "/admin/login" in anonymous.headers["location"]
        with_shop_token = http.get("/admin/", headers=TOKEN)
        assert with_shop_token.status_code == 303
        assert http.get("/admin/api/failures").status_code == 401
        wrong = http.post("/admin/login", data={"password": "nope", "next": "/admin/"})
        assert wrong.status_code == 401 and "ec_admin" not in wrong.headers.get("set-cookie", "")
        good = http.post("/admin/login", data={"password": PASSWORD, "next": "/admin/"})
        assert good.status_code == 303
        http.cookies.set("ec_admin", good.cookies["ec_admin"], path="/admin")
        assert http.get("/admin/").status_code == 200
        no_csrf = http.post("/admin/failures/1/dismiss", data={"reason": "x"})
        assert no_csrf.status_code == 403
        forged = http.post("/admin/failures/1/dismiss", data={"reason": "x", "csrf": "0" * 64})
        assert forged.status_code == 403

    # Two orders that cannot be sent: one to fix and retry, one to dismiss.
    bad = stack.post_order("BAD-1", product="NO-SUCH-SKU")
    assert bad.status_code == 422, bad.text
    assert stack.post_order("BAD-2", product="ALSO-MISSING").status_code == 422
    assert stack.post_order("GOOD-1").status_code == 202

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        try:
            page.goto(f"{stack.url}/admin/orders")
            expect(page).to_have_url(f"{stack.url}/admin/login?next=%2Fadmin%2Forders")
            page.screenshot(path=SHOTS / "login.png")
            page.fill("#password", PASSWORD)
            page.click("#login")
            expect(page.locator("#orders")).to_be_visible()

            # 2. The order and its timeline, filling in as Extend reserves and picks it.
            page.fill("#q", "GOOD-1")
            page.click("#search")
            page.click("text=GOOD-1")
            expect(page.locator("#timeline")).to_contain_text("received from the shop")
            wait_for(lambda: stack.local()["GOOD-1"]["orderNumber"], 60, what="GOOD-1 sent")
            number = stack.local()["GOOD-1"]["orderNumber"]
            stack.sim("POST", f"/orders/{number}/reserve")
            stack.sim(
                "POST", f"/orders/{number}/pick", json={"carrier": "DHL", "trackingNumber": "T-77"}
            )
            page.reload()
            expect(page.locator("#order-number")).to_have_text(number, timeout=30_000)
            expect(page.locator("#timeline")).to_contain_text("orders.send", timeout=30_000)
            # Progress comes back by webhook; the page refreshes itself every 5 s.
            expect(page.locator("#timeline")).to_contain_text("shipped", timeout=60_000)
            expect(page.locator("#timeline")).to_contain_text("T-77")
            page.screenshot(path=SHOTS / "order-timeline.png", full_page=True)

            # 3. Fix the parked order's SKU and retry: in Extend exactly once.
            page.click("text=Failures")
            expect(page.locator("#failures")).to_contain_text("BAD-1")
            page.screenshot(path=SHOTS / "failures.png", full_page=True)
            page.click("#failures tr:has-text('BAD-1') a")
            expect(page.locator("#message")).to_contain_text("NO-SUCH-SKU")
            page.fill("#line_1", "P000001")
            page.screenshot(path=SHOTS / "failure-edit.png", full_page=True)
            page.click("#retry")
            expect(page.locator("#notice")).to_contain_text("queued for sending")
            wait_for(lambda: stack.local()["BAD-1"]["orderNumber"], 60, what="BAD-1 sent")
            page.reload()
            expect(page.locator("#state")).to_have_text("resolved", timeout=30_000)
            time.sleep(1.0)  # a second POST, were there one, would have landed by now
            assert stack.by_external()["BAD-1"] == 1
            sent = stack.sim_orders()[stack.local()["BAD-1"]["orderNumber"]]
            assert [r["product"]["productNumber"] for r in sent["orderRows"]] == ["P000001"]

            # 4. Dismiss the other one with a reason.
            page.click("text=Failures")
            page.click("#failures tr:has-text('BAD-2') a")
            page.fill("#dismiss-reason", "customer re-ordered by phone")
            page.click("#dismiss")
            expect(page.locator("#state")).to_have_text("dismissed")
            expect(page.locator("body")).to_contain_text("customer re-ordered by phone")
            page.screenshot(path=SHOTS / "failure-dismissed.png", full_page=True)

            # 5. A dry-run sync started from the console, watched to its end.
            page.click("text=Sync")
            page.select_option("#data-point", "products")
            page.check("#dry-run")
            page.check("#full")
            page.click("#start-sync")
            expect(page.locator("#notice")).to_contain_text("queued: products (dry run)")
            expect(page.locator("#runs .run-status").first).to_have_text("done", timeout=60_000)
            expect(page.locator("#runs")).to_contain_text("dry run, full")
            expect(page.locator("#runs")).to_contain_text("unchanged 40")
            page.screenshot(path=SHOTS / "sync.png", full_page=True)

            page.click("text=Overview")
            expect(page.locator("#failures-card")).to_contain_text("none")
            expect(page.locator("#extend-card")).to_contain_text("answering")
            # One row per rate-limit group called (the sync's lists: heavy; orders: write).
            expect(page.locator("#extend-groups")).to_contain_text("heavy")
            expect(page.locator("#extend-groups")).to_contain_text("write")
            expect(page.locator("#freshness")).to_contain_text("products")
            # The process running the jobs, alive (flows/executors.py's heartbeat).
            expect(page.locator("#executors")).to_contain_text("alive")
            page.screenshot(path=SHOTS / "overview.png", full_page=True)
        finally:
            browser.close()
    assert stack.by_external()["BAD-2"] == 0
