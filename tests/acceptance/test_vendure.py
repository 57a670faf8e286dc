"""A real Vendure end to end (issue 14): Vendure 3.7 (node, sql.js) with the project's plugin, the
simulator as Extend and the connector, three processes on loopback. Orders are placed the way a
customer places them, through Vendure's Shop API; what Vendure shows is read through its Admin
API. Exact counts; throughput and call counts are printed (`-s`), bounds asserted where the issue
names one.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

from support.fleet import SECRET, simulator
from support.processes import CLI, Proc, free_port, wait_for
from support.vendure import GraphQL, Vendure, vendure_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SHOP_SECRET = "whsec_dmVuZHVyZS1zaG9wLXNlY3JldC1mb3ItdGVzdHM="
WAREHOUSES = {"MainWarehouse": "Default Stock Location", "GreenWarehouse": "Green"}
PRODUCTS = [f"P{n:06d}" for n in range(1, 11)]


@dataclass
class Stack:
    tmp: Path
    sim_proc: Proc
    sim_url: str
    connector: Proc
    url: str
    env: dict[str, str]
    vendure: Vendure
    http: httpx2.Client
    variants: dict[str, str]  # sku -> variant id

    def sim(self, method: str, path: str, **kw: Any) -> Any:
        r = self.http.request(method, f"{self.sim_url}/_sim{path}", **kw)
        assert r.status_code < 300, r.text
        return r.json() if r.content else None

    def extend_orders(self) -> dict[str, dict[str, Any]]:
        """orderNumber -> order: every order in Extend (the simulator's truth)."""
        data: Any = self.sim("GET", "/state/orders")
        items = data["items"] if isinstance(data, dict) else data
        return {o["orderNumber"]: o for o in items}

    def by_external(self) -> collections.Counter[str]:
        return collections.Counter(
            o.get("orderNumberExternal") for o in self.extend_orders().values()
        )

    def place_order(self, lines: dict[str, int], *, shop: GraphQL | None = None) -> str:
        """Place and pay an order as a guest (or as the logged-in `shop` customer); its code."""
        guest = shop is None
        shop = shop or self.vendure.shop()
        for sku, qty in lines.items():
            out = shop(
                "mutation($v: ID!, $q: Int!) { addItemToOrder(productVariantId: $v, quantity: $q) "
                "{ ... on Order { code } ... on ErrorResult { errorCode message } } }",
                v=self.variants[sku],
                q=qty,
            )["addItemToOrder"]
            assert "code" in out, out
        if guest:
            shop(
                "mutation { setCustomerForOrder(input: {emailAddress: "
                f'"guest-{time.monotonic_ns()}@example.com", firstName: "Gus", lastName: "Guest"}})'
                " { ... on Order { code } ... on ErrorResult { errorCode message } } }"
            )
        shop(
            'mutation { setOrderShippingAddress(input: {fullName: "Bo Buyer", streetLine1: '
            '"Storgatan 1", city: "Stockholm", postalCode: "11122", countryCode: "SE"}) '
            "{ ... on Order { code } ... on ErrorResult { message } } }"
        )
        method = shop("{ eligibleShippingMethods { id } }")["eligibleShippingMethods"][0]["id"]
        shop(
            "mutation($id: ID!) { setOrderShippingMethod(shippingMethodId: [$id]) "
            "{ ... on Order { code } ... on ErrorResult { message } } }",
            id=method,
        )
        shop(
            'mutation { transitionOrderToState(state: "ArrangingPayment") '
            "{ ... on Order { state } ... on ErrorResult { message } } }"
        )
        order = shop(
            'mutation { addPaymentToOrder(input: {method: "test-payment", metadata: {}}) '
            "{ ... on Order { code state } ... on ErrorResult { errorCode message } } }"
        )["addPaymentToOrder"]
        assert order.get("state") == "PaymentSettled", order
        return str(order["code"])

    def vendure_order(self, code: str) -> dict[str, Any]:
        items = self.vendure.admin(
            "query($c: String!) { orders(options: {filter: {code: {eq: $c}}}) { items { "
            "code state customFields { extendOrderNumber extendStatus } "
            "fulfillments { state method trackingCode } } } }",
            c=code,
        )["orders"]["items"]
        return dict(items[0])

    def stock_levels(self) -> dict[str, dict[str, int]]:
        """sku -> stock location name -> saleable (stockOnHand - stockAllocated)."""
        names = {
            loc["id"]: loc["name"]
            for loc in self.vendure.admin("{ stockLocations { items { id name } } }")[
                "stockLocations"
            ]["items"]
        }
        items = self.vendure.admin(
            "{ productVariants(options: {take: 1000}) { items { sku stockLevels { "
            "stockLocationId stockOnHand stockAllocated } } } }"
        )["productVariants"]["items"]
        return {
            v["sku"]: {
                names[lv["stockLocationId"]]: lv["stockOnHand"] - lv["stockAllocated"]
                for lv in v["stockLevels"]
            }
            for v in items
        }

    def extend_stock(self) -> dict[str, dict[str, int]]:
        """sku -> location -> Extend's available balance, for the SKUs with a balance in a
        sell-from warehouse (others are left as Vendure has them: docs/webshops/vendure.md)."""
        data: Any = self.sim("GET", "/state/balances")
        items = data["items"] if isinstance(data, dict) else data
        kept = {b["productNumber"] for b in items if b["warehouse"] in WAREHOUSES}
        out = {sku: dict.fromkeys(WAREHOUSES.values(), 0) for sku in self.variants if sku in kept}
        for b in items:
            if b["productNumber"] in self.variants and b["warehouse"] in WAREHOUSES:
                # Vendure keeps whole, non-negative units: an oversold warehouse shows 0.
                out[b["productNumber"]][WAREHOUSES[b["warehouse"]]] = max(
                    0, int(float(b["availableBalance"]))
                )
        return out


def _run_cli(tmp: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`extend-connector ARGS` with the connector's settings `env`, as its operator would."""
    return subprocess.run(
        [*CLI, *args],
        env={**os.environ, **env},
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _diagnose(tmp: Path, env: dict[str, str], procs: tuple[Proc, ...]) -> None:
    """What a failed scenario leaves to read: parked failures, events still owed, the logs."""
    for command in (("failures", "list"), ("status",)):
        out = _run_cli(tmp, env, *command)
        print(f"\n----- {' '.join(command)} -----\n{out.stdout}{out.stderr}")
    for proc in procs:
        log = "\n".join(line for line in proc.tail(400).splitlines() if "http_request" not in line)
        print(f"\n----- {proc.name} log -----\n{log[-6000:]}")


def _create_products(vendure: Vendure) -> dict[str, str]:
    admin = vendure.admin
    tax = admin("{ taxCategories { items { id } } }")["taxCategories"]["items"][0]["id"]
    admin('mutation { createStockLocation(input: {name: "Green"}) { id } }')
    variants = {}
    for sku in PRODUCTS:
        product = admin(
            "mutation($n: String!, $s: String!) { createProduct(input: {translations: "
            '[{languageCode: en, name: $n, slug: $s, description: "test"}]}) { id } }',
            n=f"Widget {sku}",
            s=sku.lower(),
        )["createProduct"]
        variant = admin(
            "mutation($p: ID!, $sku: String!, $tax: ID!) { createProductVariants(input: "
            "[{productId: $p, sku: $sku, price: 10000, taxCategoryId: $tax, "
            '  translations: [{languageCode: en, name: "Widget"}], stockOnHand: 100}]) { id } }',
            p=product["id"],
            sku=sku,
            tax=tax,
        )["createProductVariants"][0]
        variants[sku] = str(variant["id"])
    return variants


@pytest.fixture
def stack(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """The three processes. `request.param` (indirect): scopes to turn on (`products`,
    `customers`, `prices`), else all off; without products from Extend the test creates ten
    products in Vendure."""
    scopes: dict[str, str] = dict(getattr(request, "param", {}))
    sim_port, port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    http = httpx2.Client(timeout=30.0)
    sim = simulator(
        tmp_path,
        port,
        sim_port,
        products=40,
        warehouses=tuple(WAREHOUSES),
        extra=("--no-rate-limits",),
    ).start()
    try:
        with vendure_server(tmp_path, connector_url=url, secret=SHOP_SECRET) as vendure:
            if scopes.get("products") == "sync":
                vendure.admin('mutation { createStockLocation(input: {name: "Green"}) { id } }')
                variants: dict[str, str] = {}
            else:
                variants = _create_products(vendure)
            env = {
                "EXTEND_CONNECTOR_EXTEND__BASE_URL": f"http://127.0.0.1:{sim_port}/api",
                "EXTEND_CONNECTOR_EXTEND__WEBHOOK_SECRET": SECRET,
                "EXTEND_CONNECTOR_EXTEND__WAREHOUSES": ",".join(WAREHOUSES),
                "EXTEND_CONNECTOR_SERVER__PORT": str(port),
                "EXTEND_CONNECTOR_STORE__DATA_DIR": str(tmp_path / "data"),
                "EXTEND_CONNECTOR_SCOPE__PRODUCTS": scopes.get("products", "off"),
                "EXTEND_CONNECTOR_SCOPE__CUSTOMERS": scopes.get("customers", "off"),
                "EXTEND_CONNECTOR_SCOPE__PRICES": scopes.get("prices", "off"),
                "EXTEND_CONNECTOR_WEBSHOP__ADAPTER": "vendure",
                "EXTEND_CONNECTOR_WEBSHOP__WEBHOOK_SECRET": SHOP_SECRET,
                "EXTEND_CONNECTOR_WEBSHOP__STOCK_FIGURE": "per_warehouse",
                "EXTEND_CONNECTOR_WEBSHOP__VENDURE__ADMIN_API_URL": f"{vendure.base}/admin-api",
                "EXTEND_CONNECTOR_WEBSHOP__VENDURE__PASSWORD": "superadmin",
                "EXTEND_CONNECTOR_WEBSHOP__VENDURE__STOCK_LOCATIONS": (
                    '{"MainWarehouse": "Default Stock Location", "GreenWarehouse": "Green"}'
                ),
                "EXTEND_CONNECTOR_WEBSHOP__VENDURE__POLL_SECONDS": "5",
            }
            connector = Proc(
                "connector",
                [*CLI, "run"],
                env=env,
                log_dir=tmp_path,
                cwd=tmp_path,
                health_url=f"{url}/healthz",
            ).start()
            try:
                yield Stack(
                    tmp=tmp_path,
                    sim_proc=sim,
                    sim_url=f"http://127.0.0.1:{sim_port}",
                    connector=connector,
                    url=url,
                    env=env,
                    vendure=vendure,
                    http=http,
                    variants=variants,
                )
            finally:
                report = getattr(request.node, "rep_call", None)
                if report is None or report.failed:
                    _diagnose(tmp_path, env, (connector, vendure.proc, sim))
                connector.stop()
    finally:
        sim.stop()
        http.close()


def _all_in(stack: Stack, codes: list[str]) -> collections.Counter[str] | None:
    counts = stack.by_external()
    return counts if all(counts[code] for code in codes) else None


def test_paid_orders_reach_extend_once_and_come_back_shipped_with_tracking(stack: Stack) -> None:
    started = time.monotonic()
    codes = [stack.place_order({PRODUCTS[i % 5]: 1 + i % 3}) for i in range(50)]
    placed = time.monotonic() - started
    counts = wait_for(lambda: _all_in(stack, codes), timeout=180, what="every order in Extend")
    assert {code: counts[code] for code in codes} == dict.fromkeys(codes, 1)
    in_extend = time.monotonic() - started
    numbers = {o["orderNumberExternal"]: n for n, o in stack.extend_orders().items()}
    for i, code in enumerate(codes):
        stack.sim("POST", f"/orders/{numbers[code]}/reserve")
        stack.sim(
            "POST",
            f"/orders/{numbers[code]}/pick",
            json={"carrier": "PostNord", "trackingNumber": f"TRACK-{i:04d}"},
        )

    def shipped() -> bool:
        for i, code in enumerate(codes):
            order = stack.vendure_order(code)
            if [(f["state"], f["trackingCode"]) for f in order["fulfillments"]] != [
                ("Shipped", f"TRACK-{i:04d}")
            ]:
                return False
        return True

    # 100 order changes applied through Vendure's Admin API (sql.js): about 10 s on an idle
    # machine; CI's parallel workers slowed Vendure past 180 s once (2026-12-04), before a
    # backlog about one order was applied once and the orders of a pass looked up at once.
    wait_for(shipped, timeout=300, interval=1.0, what="every Vendure order shipped with tracking")
    assert stack.by_external() == collections.Counter(codes)
    # Extend's status and number on each Vendure order (the plugin's custom fields).
    wait_for(
        lambda: all(
            stack.vendure_order(code)["customFields"]
            == {"extendOrderNumber": numbers[code], "extendStatus": "Picked"}
            for code in codes
        ),
        timeout=60,
        interval=1.0,
        what="Extend's status on every Vendure order",
    )
    print(
        f"50 orders: placed in {placed:.1f} s, all in Extend after {in_extend:.1f} s, "
        f"shipped in Vendure after {time.monotonic() - started:.1f} s"
    )


def test_orders_placed_while_the_connector_is_down_arrive_once_when_it_starts(
    stack: Stack,
) -> None:
    first = stack.place_order({PRODUCTS[0]: 1})
    wait_for(lambda: _all_in(stack, [first]), timeout=60, what="the first order in Extend")
    stack.connector.stop()
    # The plugin's events go nowhere now (it gives up after three tries): only the catch-up
    # read of Vendure's orders can find these.
    codes = [stack.place_order({PRODUCTS[i]: 2}) for i in range(1, 6)]
    assert not any(stack.by_external()[code] for code in codes)
    stack.connector.start()
    wait_for(lambda: _all_in(stack, codes), timeout=120, what="the orders placed while down")
    time.sleep(6.0)  # a poll later (every 5 s here): still once each
    assert {c: n for c, n in stack.by_external().items() if c in {first, *codes}} == dict.fromkeys(
        [first, *codes], 1
    )


def _cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return _run_cli(stack.tmp, stack.env, *args)


def test_an_order_extend_refuses_is_parked_naming_the_sku_then_fixed_and_sent_once(
    stack: Stack,
) -> None:
    admin = stack.vendure.admin
    tax = admin("{ taxCategories { items { id } } }")["taxCategories"]["items"][0]["id"]
    product = admin(
        'mutation { createProduct(input: {translations: [{languageCode: en, name: "Ghost", '
        'slug: "ghost", description: "not in Extend"}]}) { id } }'
    )["createProduct"]
    ghost = admin(
        "mutation($p: ID!, $tax: ID!) { createProductVariants(input: [{productId: $p, "
        'sku: "GHOST-1", price: 500, taxCategoryId: $tax, translations: [{languageCode: en, '
        'name: "Ghost"}], stockOnHand: 10}]) { id } }',
        p=product["id"],
        tax=tax,
    )["createProductVariants"][0]
    stack.variants["GHOST-1"] = str(ghost["id"])
    code = stack.place_order({"GHOST-1": 1, PRODUCTS[0]: 1})

    def parked() -> dict[str, Any] | None:
        out = _cli(stack, "failures", "list", "--json")
        assert out.returncode == 0, out.stderr
        found = [f for f in json.loads(out.stdout) if f["key"] == code]
        return found[0] if found else None

    failure = wait_for(parked, timeout=60, what="the order parked")
    shown = _cli(stack, "failures", "show", str(failure["id"]))
    assert "GHOST-1" in shown.stdout, shown.stdout
    assert stack.by_external()[code] == 0
    fixed = _cli(stack, "failures", "retry", str(failure["id"]), "--product", f"1={PRODUCTS[1]}")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    wait_for(lambda: _all_in(stack, [code]), timeout=60, what="the fixed order in Extend")
    time.sleep(6.0)  # the next read of Vendure's orders sends the original again: a repeat
    assert stack.by_external()[code] == 1
    (order,) = [o for o in stack.extend_orders().values() if o["orderNumberExternal"] == code]
    assert sorted(r["product"]["productNumber"] for r in order["orderRows"]) == sorted(PRODUCTS[:2])
    assert "shop_order_changed_after_intake" not in stack.connector.tail(2000)


def _metric(stack: Stack, name: str, **labels: str) -> float:
    total = 0.0
    for line in stack.http.get(f"{stack.url}/metrics").text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _stock_equal(stack: Stack) -> bool:
    extend = stack.extend_stock()
    vendure = {k: v for k, v in stack.stock_levels().items() if k in extend}
    if vendure != extend:
        print(
            "differs:", {k: (vendure.get(k), v) for k, v in extend.items() if vendure.get(k) != v}
        )
    return vendure == extend


def test_a_burst_of_balance_changes_becomes_a_few_batched_stock_updates(stack: Stack) -> None:
    wait_for(
        lambda: _stock_equal(stack),
        timeout=120,
        interval=1.0,
        what="the first load of stock into Vendure",
    )
    calls = "extend_connector_shop_api_calls_total"
    before = _metric(stack, calls, adapter="vendure")
    for batch in range(10):  # 2,000 changes within about 10 s
        stack.sim(
            "POST",
            "/stock/bulk",
            json={
                "random": {
                    "count": 200,
                    "products": len(PRODUCTS),  # the first ten: the ones Vendure sells
                    "warehouses": list(WAREHOUSES),
                    "seed": batch,
                    "maxDelta": 5,
                }
            },
        )
        time.sleep(1.0)
    wait_for(
        lambda: _stock_equal(stack),
        timeout=120,
        interval=1.0,
        what="Vendure's stock per location equal to Extend's",
    )
    used = _metric(stack, calls, adapter="vendure") - before
    updates = _metric(stack, calls, adapter="vendure", operation="updateProductVariants")
    print(f"2,000 balance changes -> {used:.0f} Admin API calls ({updates:.0f} stock mutations)")
    # Two calls (a variant look-up and one mutation) per outbox pass that carried stock events;
    # one call per change would be 2,000.
    assert used <= 100


def test_check_logs_in_to_vendure_and_names_what_is_wrong(stack: Stack) -> None:
    good = _cli(stack, "check")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "vendure: logged in" in good.stdout
    wrong = {
        "EXTEND_CONNECTOR_WEBSHOP__VENDURE__STOCK_LOCATIONS": (
            '{"MainWarehouse": "Default Stock Location", "GreenWarehouse": "Grön"}'
        ),
    }
    bad = _run_cli(stack.tmp, {**stack.env, **wrong}, "check")
    assert bad.returncode == 1
    assert "webshop.vendure.stock_locations" in bad.stderr and "'Grön'" in bad.stderr, bad.stderr
    denied = _run_cli(
        stack.tmp, {**stack.env, "EXTEND_CONNECTOR_WEBSHOP__VENDURE__PASSWORD": "nope"}, "check"
    )
    assert denied.returncode == 1
    assert "webshop.vendure.admin_api_url / username / password" in denied.stderr, denied.stderr


def test_a_forged_or_malformed_shop_event_is_refused(stack: Stack) -> None:
    from datetime import UTC, datetime

    from standardwebhooks.webhooks import Webhook

    url = f"{stack.url}/webhooks/vendure"
    body = (
        '{"type": "order.state_changed", "data": {"orderCode": "X", "toState": "PaymentSettled"}}'
    )
    now = datetime.now(UTC)

    def headers(secret: str, payload: str) -> dict[str, str]:
        return {
            "webhook-id": "msg_1",
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(secret).sign("msg_1", now, payload),
            "content-type": "application/json",
        }

    forged = stack.http.post(url, content=body, headers=headers("whsec_" + "Zm9yZ2Vk" * 4, body))
    assert forged.status_code == 401
    unsigned = stack.http.post(url, content=body)
    assert unsigned.status_code == 401
    malformed = stack.http.post(url, content="[1]", headers=headers(SHOP_SECRET, "[1]"))
    assert malformed.status_code == 400
    good = stack.http.post(url, content=body, headers=headers(SHOP_SECRET, body))
    assert good.status_code == 204
    log = stack.connector.tail(500)
    assert "shop_event_refused" in log and "shop_event_malformed" in log


def test_vendure_down_while_stock_and_orders_move_gets_everything_once_it_is_back(
    stack: Stack,
) -> None:
    wait_for(lambda: _stock_equal(stack), timeout=120, interval=1.0, what="the first stock load")
    codes = [stack.place_order({PRODUCTS[i]: 1}) for i in range(3)]
    wait_for(lambda: _all_in(stack, codes), timeout=60, what="the orders in Extend")
    numbers = {o["orderNumberExternal"]: n for n, o in stack.extend_orders().items()}
    stack.vendure.proc.stop()
    for i, code in enumerate(codes):
        stack.sim("POST", f"/orders/{numbers[code]}/reserve")
        stack.sim(
            "POST",
            f"/orders/{numbers[code]}/pick",
            json={"carrier": "DHL", "trackingNumber": f"DOWN-{i}"},
        )
    stack.sim(
        "POST",
        "/stock/bulk",
        json={"random": {"count": 100, "products": len(PRODUCTS), "warehouses": list(WAREHOUSES)}},
    )
    time.sleep(5.0)  # the connector tries, fails, and backs off
    stack.vendure.proc.start(timeout=120)
    wait_for(lambda: _stock_equal(stack), timeout=180, interval=1.0, what="stock after the return")

    def shipped() -> bool:
        return all(
            [(f["state"], f["trackingCode"]) for f in stack.vendure_order(c)["fulfillments"]]
            == [("Shipped", f"DOWN-{i}")]
            for i, c in enumerate(codes)
        )

    wait_for(shipped, timeout=180, interval=1.0, what="each order shipped once in Vendure")
    time.sleep(3.0)
    assert shipped()  # one fulfilment each: nothing applied twice
    assert stack.by_external() == collections.Counter(codes)


@pytest.mark.parametrize(
    "stack", [{"products": "sync", "customers": "from_extend", "prices": "sync"}], indirect=True
)
def test_products_customers_and_a_customer_price_from_extend_are_what_the_customer_pays(
    stack: Stack,
) -> None:
    # A customer with a price of their own on a product in stock: a price list in Extend.
    number = "10001"
    balances = stack.sim("GET", "/state/balances")
    sku = sorted(
        b["productNumber"]
        for b in balances
        if b["warehouse"] in WAREHOUSES and float(b["availableBalance"]) > 5
    )[0]
    list_price = next(
        float(p["unitPrice"])
        for p in stack.sim("GET", "/state/prices?customerNumber=WEB")
        if p["productNumber"] == sku
    )
    stack.sim("PATCH", f"/customers/{number}", json={"priceList": "VENDURE-B2B"})
    stack.sim(
        "PUT", f"/price-lists/VENDURE-B2B/{sku}", json={"unitPrice": round(list_price * 0.8, 2)}
    )
    # The customer registered in the shop with the e-mail Extend has: the connector finds them.
    email = next(c for c in stack.sim("GET", "/state/customers") if c["customerNumber"] == number)[
        "email"
    ]
    shop = stack.vendure.shop()
    registered = shop(
        "mutation($e: String!) { registerCustomerAccount(input: {emailAddress: $e, "
        'password: "secret123", firstName: "Kund", lastName: "Ett"}) { __typename '
        "... on ErrorResult { errorCode message } } }",
        e=email,
    )["registerCustomerAccount"]
    assert registered["__typename"] == "Success", registered
    login = shop(
        'mutation($e: String!) { login(username: $e, password: "secret123") { __typename '
        "... on ErrorResult { errorCode message } } }",
        e=email,
    )["login"]
    assert login["__typename"] == "CurrentUser", login
    for data_point in ("products", "customers", "prices"):  # the first load, as an operator
        done = _cli(stack, "sync", data_point)
        assert done.returncode == 0, done.stdout + done.stderr

    def listed() -> dict[str, dict[str, Any]] | None:
        items = stack.vendure.admin(
            "{ productVariants(options: {take: 1000}) { items { id sku price enabled "
            "product { slug } } } }"
        )["productVariants"]["items"]
        return {v["sku"]: v for v in items} if len(items) >= 40 else None

    variants = wait_for(listed, timeout=180, interval=1.0, what="Extend's products in Vendure")

    def prices(customer: str) -> dict[str, int]:
        out = stack.sim("GET", f"/state/prices?customerNumber={customer}")
        return {p["productNumber"]: round(float(p["unitPrice"]) * 100) for p in out}

    web = prices("WEB")

    def list_prices_set() -> bool:
        now = listed() or {}
        return all(now[s]["price"] == web[s] and now[s]["enabled"] for s in web)

    wait_for(list_prices_set, timeout=120, interval=1.0, what="list prices (customer WEB)")
    own = prices(number)
    assert own[sku] != web[sku]

    def in_vendure() -> bool:
        items = stack.vendure.admin(
            "query($e: String!) { customers(options: {filter: {emailAddress: {eq: $e}}}) { "
            "items { customFields { extendCustomerNumber } } } }",
            e=email,
        )["customers"]["items"]
        return [i["customFields"]["extendCustomerNumber"] for i in items] == [number]

    wait_for(in_vendure, timeout=120, interval=1.0, what="Extend's customer in Vendure")

    def customer_prices() -> bool:
        kept = stack.vendure.admin(
            "query($c: String!) { extendCustomerPrices(customerNumber: $c, take: 1000) "
            "{ sku price } }",
            c=number,
        )["extendCustomerPrices"]
        return {p["sku"]: p["price"] for p in kept} == own

    wait_for(customer_prices, timeout=120, interval=1.0, what="the customer's prices in Vendure")
    slug = variants[sku]["product"]["slug"]
    seen = shop("query($s: String!) { product(slug: $s) { variants { id sku price } } }", s=slug)[
        "product"
    ]["variants"][0]
    anonymous = stack.vendure.shop()(
        "query($s: String!) { product(slug: $s) { variants { price } } }", s=slug
    )["product"]["variants"][0]
    assert (seen["price"], anonymous["price"]) == (own[sku], web[sku])
    stack.variants[sku] = seen["id"]
    code = stack.place_order({sku: 2}, shop=shop)
    wait_for(lambda: _all_in(stack, [code]), timeout=60, what="the customer's order in Extend")
    (order,) = [o for o in stack.extend_orders().values() if o["orderNumberExternal"] == code]
    assert order["orderHeader"]["customerNumber"] == number
    (row,) = order["orderRows"]
    assert round(float(row["salesData"]["unitPrice"]) * 100) == own[sku]
    print(
        f"{len(variants)} products, list and customer prices in Vendure; {sku}: {own[sku]} for "
        f"{number}, {web[sku]} anonymous; order {code} reached Extend with the customer's price"
    )


@pytest.mark.parametrize("stack", [{"customers": "to_extend"}], indirect=True)
def test_a_customer_registering_in_vendure_becomes_an_extend_customer_and_orders_as_one(
    stack: Stack,
) -> None:
    shop = stack.vendure.shop()
    email = "new.buyer@example.com"
    registered = shop(
        "mutation($e: String!) { registerCustomerAccount(input: {emailAddress: $e, "
        'password: "secret123", firstName: "Nova", lastName: "Buyer"}) { __typename } }',
        e=email,
    )["registerCustomerAccount"]
    assert registered["__typename"] == "Success", registered
    shop(
        'mutation($e: String!) { login(username: $e, password: "secret123") { __typename } }',
        e=email,
    )
    code = stack.place_order({PRODUCTS[0]: 1}, shop=shop)

    def extend_customer() -> dict[str, Any] | None:
        found = [c for c in stack.sim("GET", "/state/customers") if c.get("email") == email]
        return found[0] if found else None

    customer = wait_for(extend_customer, timeout=120, what="the shop's customer in Extend")
    wait_for(lambda: _all_in(stack, [code]), timeout=120, what="the customer's order in Extend")
    (order,) = [o for o in stack.extend_orders().values() if o["orderNumberExternal"] == code]
    assert order["orderHeader"]["customerNumber"] == customer["customerNumber"]

    def numbered() -> bool:
        items = stack.vendure.admin(
            "query($e: String!) { customers(options: {filter: {emailAddress: {eq: $e}}}) { "
            "items { customFields { extendCustomerNumber } } } }",
            e=email,
        )["customers"]["items"]
        return [i["customFields"]["extendCustomerNumber"] for i in items] == [
            customer["customerNumber"]
        ]

    wait_for(numbered, timeout=60, interval=1.0, what="the Extend number on the Vendure customer")
    time.sleep(6.0)  # later reads of Vendure's customers and orders: nothing created twice
    assert [c for c in stack.sim("GET", "/state/customers") if c.get("email") == email] == [
        customer
    ]
    assert stack.by_external()[code] == 1


def test_lines_cancelled_on_either_side_are_cancelled_on_the_other(stack: Stack) -> None:
    code = stack.place_order({PRODUCTS[0]: 2, PRODUCTS[1]: 1, PRODUCTS[2]: 3})
    wait_for(lambda: _all_in(stack, [code]), timeout=60, what="the order in Extend")
    admin = stack.vendure.admin
    order = admin(
        "query($c: String!) { orders(options: {filter: {code: {eq: $c}}}) { items { id "
        "lines { id quantity productVariant { sku } } } } }",
        c=code,
    )["orders"]["items"][0]
    line = {x["productVariant"]["sku"]: x for x in order["lines"]}
    # The merchant cancels the second line in Vendure: Extend's row goes inactive.
    cancelled = admin(
        "mutation($o: ID!, $l: ID!) { cancelOrder(input: {orderId: $o, lines: [{orderLineId: $l, "
        'quantity: 1}], reason: "customer asked"}) { __typename } }',
        o=order["id"],
        l=line[PRODUCTS[1]]["id"],
    )["cancelOrder"]
    assert cancelled["__typename"] == "Order", cancelled

    def extend_rows() -> dict[str, str]:
        (o,) = [o for o in stack.extend_orders().values() if o["orderNumberExternal"] == code]
        return {r["product"]["productNumber"]: r.get("rowOperation") or "" for r in o["orderRows"]}

    wait_for(
        lambda: extend_rows()[PRODUCTS[1]] == "Inactive",
        timeout=60,
        interval=1.0,
        what="the row cancelled in Extend",
    )
    # Extend cancels the third line (the shop's cancellation through the connector's API, as a
    # headless shop would): the Vendure line is cancelled.
    r = stack.http.post(
        f"{stack.url}/v1/orders/{code}/lines/cancel",
        json={"lines": [3]},
        headers={"authorization": "Bearer shop-token"},
    )
    assert r.status_code == 202, r.text

    def vendure_quantities() -> dict[str, int]:
        o = admin(
            "query($c: String!) { orders(options: {filter: {code: {eq: $c}}}) { items { "
            "lines { quantity productVariant { sku } } } } }",
            c=code,
        )["orders"]["items"][0]
        return {x["productVariant"]["sku"]: x["quantity"] for x in o["lines"]}

    wait_for(
        lambda: vendure_quantities() == {PRODUCTS[0]: 2, PRODUCTS[1]: 0, PRODUCTS[2]: 0},
        timeout=60,
        interval=1.0,
        what="Extend's cancelled row cancelled in Vendure",
    )
    time.sleep(6.0)  # later reads of the order: nothing cancelled twice, nothing sent again
    assert extend_rows() == {PRODUCTS[0]: "", PRODUCTS[1]: "Inactive", PRODUCTS[2]: "Inactive"}
    assert vendure_quantities() == {PRODUCTS[0]: 2, PRODUCTS[1]: 0, PRODUCTS[2]: 0}
    assert stack.by_external()[code] == 1


def test_the_demo_runs_against_a_real_vendure_and_checks_itself(tmp_path: Path) -> None:
    from support.vendure import installed

    shop_dir = installed()
    out = _run_cli(
        tmp_path,
        {"EXTEND_CONNECTOR_VENDURE_DIR": str(shop_dir)},
        *("demo", "--shop", "vendure", "--duration", "15", "--products", "20"),
    )
    print(out.stdout[-2000:])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "CHECK PASSED" in out.stdout


def test_the_vendure_demo_says_plainly_that_node_is_missing(tmp_path: Path) -> None:
    out = _run_cli(
        tmp_path, {"PATH": str(Path(CLI[0]).parent)}, "demo", "--shop", "vendure", "--duration", "5"
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "node and npm not found: the Vendure shop needs Node.js 20+ with npm" in out.stdout
