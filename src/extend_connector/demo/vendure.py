"""`extend-connector demo --shop vendure`: the demo against a real Vendure shop.

A Vendure 3.7 server with the connector's plugin (installed on first use with npm from the
committed lock file), the simulator as Extend, the connector with `webshop.adapter = "vendure"`.
The catalogue, list prices and stock come from Extend into Vendure; a shopper places and pays
orders through Vendure's Shop API as a customer would; Extend's warehouse staff (the demo's
driver) reserve and pick them with tracking numbers. At the end the demo settles and checks:
every paid Vendure order in Extend exactly once, every picked order shown as Shipped in Vendure
with its tracking code, Vendure's stock per location equal to Extend's available balance.
"""

from __future__ import annotations

import os
import random
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx2
from pydantic import AnyHttpUrl, SecretStr

from extend_connector.demo.driver import ExtendDriver
from extend_connector.demo.stack import (
    SELL_FROM,
    WEBHOOK_SECRET,
    extend_settings,
    log_to_file,
    reserve_port,
    simulator_config,
)
from extend_connector.settings import (
    CustomersScope,
    EmbeddedSettings,
    ScopeSettings,
    ServerSettings,
    Settings,
    StoreSettings,
    SyncSettings,
    VendureSettings,
    WebshopSettings,
)
from extend_connector.simulator import RunningSimulator, WebhookRegistration, run_in_thread
from extend_connector.webshop.vendure import install

Say = Callable[[str], None]
SHOP_SECRET = "whsec_ZGVtby12ZW5kdXJlLXNob3Atc2VjcmV0LTMyYnl0ZXM="
DEFAULT_LOCATION = "Default Stock Location"
EXIT_PASSED, EXIT_CHECK_FAILED, EXIT_CANNOT_RUN = 0, 1, 2


class Gql:
    """A GraphQL session on one of Vendure's APIs (bearer token from `vendure-auth-token`)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.token: str | None = None
        self.http = httpx2.Client(timeout=60.0)

    def __call__(self, query: str, **variables: Any) -> dict[str, Any]:
        headers = {"authorization": f"Bearer {self.token}"} if self.token else {}
        r = self.http.post(self.url, json={"query": query, "variables": variables}, headers=headers)
        self.token = r.headers.get("vendure-auth-token") or self.token
        out = r.json()
        if out.get("errors"):
            raise RuntimeError(f"Vendure: {out['errors'][0].get('message')}")
        return dict(out["data"])

    def close(self) -> None:
        self.http.close()


def _locations() -> dict[str, str]:
    """Extend's sell-from warehouses -> Vendure stock locations (the first is Vendure's own)."""
    return {w: DEFAULT_LOCATION if i == 0 else w for i, w in enumerate(SELL_FROM)}


def vendure_settings(
    *, sim: RunningSimulator, data_dir: Path, port: int, admin_url: str
) -> Settings:
    return EmbeddedSettings(
        scope=ScopeSettings(customers=CustomersScope.OFF),
        extend=extend_settings(sim),
        webshop=WebshopSettings(
            adapter="vendure",
            webhook_secret=SecretStr(SHOP_SECRET),
            stock_figure="per_warehouse",
            vendure=VendureSettings(
                admin_api_url=AnyHttpUrl(admin_url),
                password=SecretStr("superadmin"),
                stock_locations=_locations(),
                poll_seconds=10,
            ),
        ),
        store=StoreSettings(data_dir=data_dir),
        server=ServerSettings(port=port),
        sync=SyncSettings(orders_sweep_minutes=0.5, balances_sweep_minutes=0.5),
    )


@contextmanager
def _vendure(shop_dir: Path, data_dir: Path, connector_url: str, say: Say) -> Iterator[str]:
    """A Vendure server on a free port (database in `data_dir`); its base URL."""
    sock = reserve_port()
    port = sock.getsockname()[1]
    sock.close()
    log = (data_dir / "vendure.log").open("ab")
    env = {
        **os.environ,
        "VENDURE_PORT": str(port),
        "VENDURE_DATA_DIR": str(data_dir),
        "EXTEND_CONNECTOR_URL": connector_url,
        "EXTEND_CONNECTOR_WEBHOOK_SECRET": SHOP_SECRET,
    }
    proc = subprocess.Popen(
        ["node", str(shop_dir / "server.js")],
        cwd=shop_dir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"Vendure exited ({proc.returncode}); see {data_dir}/vendure.log"
                )
            try:
                if httpx2.get(f"{base}/health", timeout=1.0).status_code == 200:
                    break
            except httpx2.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Vendure not up after 180 s; see {data_dir}/vendure.log")
            time.sleep(0.5)
        say(f"vendure    {base}/shop-api and /admin-api (superadmin / superadmin)")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


class Shopper:
    """Guests placing and paying orders through Vendure's Shop API, in a thread."""

    def __init__(self, base: str, rate: float, seed: int) -> None:
        self.base = base
        self.rate = rate
        self.rnd = random.Random(seed)
        self.codes: list[str] = []
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-vendure-shopper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def _in_stock(self) -> list[str]:
        shop = Gql(f"{self.base}/shop-api")
        try:
            items = shop(
                "{ products(options: {take: 100}) { items { variants { id stockLevel } } } }"
            )
        finally:
            shop.close()
        return [
            v["id"]
            for p in items["products"]["items"]
            for v in p["variants"]
            if v["stockLevel"] == "IN_STOCK"
        ]

    def _run(self) -> None:
        interval = 1.0 / self.rate if self.rate > 0 else None
        variants: list[str] = []
        n = 0
        while interval is not None and not self._stop.wait(interval):
            try:
                if n % 10 == 0 or not variants:
                    variants = self._in_stock()
                if variants:
                    self.codes.append(self._order(self.rnd.choice(variants), n))
            except (RuntimeError, httpx2.HTTPError, KeyError):
                self.failed += 1
            n += 1

    def _order(self, variant: str, n: int) -> str:
        shop = Gql(f"{self.base}/shop-api")
        try:
            shop(
                "mutation($v: ID!) { addItemToOrder(productVariantId: $v, quantity: 1) "
                "{ ... on Order { code } } }",
                v=variant,
            )
            shop(
                "mutation($e: String!) { setCustomerForOrder(input: {emailAddress: $e, "
                'firstName: "Demo", lastName: "Shopper"}) { ... on Order { code } } }',
                e=f"shopper{n}@example.com",
            )
            shop(
                'mutation { setOrderShippingAddress(input: {fullName: "Demo Shopper", '
                'streetLine1: "Storgatan 1", city: "Stockholm", postalCode: "11122", '
                'countryCode: "SE"}) { ... on Order { code } } }'
            )
            method = shop("{ eligibleShippingMethods { id } }")["eligibleShippingMethods"][0]["id"]
            shop(
                "mutation($id: ID!) { setOrderShippingMethod(shippingMethodId: [$id]) "
                "{ ... on Order { code } } }",
                id=method,
            )
            shop('mutation { transitionOrderToState(state: "ArrangingPayment") { __typename } }')
            order = shop(
                'mutation { addPaymentToOrder(input: {method: "test-payment", metadata: {}}) '
                "{ ... on Order { code state } ... on ErrorResult { message } } }"
            )["addPaymentToOrder"]
            if order.get("state") != "PaymentSettled":
                raise RuntimeError(f"payment: {order}")
            return str(order["code"])
        finally:
            shop.close()


def _ship_the_rest(sim: RunningSimulator, codes: list[str]) -> None:
    """Extend's staff finish the day: every demo order still Registered or Reserved is picked.
    (Until Extend reserves an order, Vendure, which counts its own paid orders, rightly shows
    one less than Extend's available balance: the figures agree once every order moved on.)"""
    wanted = set(codes)
    with sim.state.lock:
        open_orders = [
            (o.order_number, o.status)
            for o in sim.state.orders.values()
            if o.order_number_external in wanted and o.status in ("Registered", "Reserved")
        ]
    with httpx2.Client(base_url=sim.admin_url, timeout=10.0) as http:
        for number, status in open_orders:
            if status == "Registered":
                http.post(f"/orders/{number}/reserve")
            http.post(
                f"/orders/{number}/pick",
                json={"carrier": "PostNord", "trackingNumber": f"PN{number}SE"},
            )


def _problems(sim: RunningSimulator, admin: Gql, codes: list[str]) -> list[str]:
    """What does not hold yet (empty: everything checks)."""
    problems = []
    with sim.state.lock:
        orders = [
            (o.order_number, o.order_number_external, o.status, o.shipments)
            for o in sim.state.orders.values()
        ]
        balances = {
            (b.product_number, b.warehouse): b.physical - b.reserved
            for b in sim.state.balances.values()
            if b.warehouse in SELL_FROM
        }
    count: dict[str, int] = {}
    picked: dict[str, str] = {}
    for number, external, status, _ in orders:
        count[external or ""] = count.get(external or "", 0) + 1
        if status == "Picked":
            picked[external or ""] = f"PN{number}SE"
    missing = [c for c in codes if count.get(c, 0) != 1]
    if missing:
        problems.append(f"{len(missing)} order(s) not in Extend exactly once, e.g. {missing[0]}")
    items = admin(
        '{ orders(options: {take: 1000, filter: {state: {notIn: ["AddingItems", '
        '"ArrangingPayment"]}}}) { items { code fulfillments { state trackingCode } } } }'
    )["orders"]["items"]
    shown = {o["code"]: o["fulfillments"] for o in items}
    unshipped = [
        code
        for code, tracking in picked.items()
        if code in shown
        and not any(f["trackingCode"] == tracking and f["state"] == "Shipped" for f in shown[code])
    ]
    if unshipped:
        problems.append(
            f"{len(unshipped)} picked order(s) not Shipped in Vendure, e.g. {unshipped[0]}"
        )
    names = {
        loc["id"]: loc["name"]
        for loc in admin("{ stockLocations { items { id name } } }")["stockLocations"]["items"]
    }
    variants = admin(
        "{ productVariants(options: {take: 1000}) { items { sku stockLevels { stockLocationId "
        "stockOnHand stockAllocated } } } }"
    )["productVariants"]["items"]
    where = {name: warehouse for warehouse, name in _locations().items()}
    wrong = []
    for v in variants:
        for level in v["stockLevels"]:
            warehouse = where.get(names[level["stockLocationId"]])
            key = (v["sku"], warehouse)
            if warehouse is None or key not in balances:
                continue
            want = max(0, int(balances[key]))
            if level["stockOnHand"] - level["stockAllocated"] != want:
                wrong.append(f"{v['sku']}@{warehouse}")
    if wrong:
        problems.append(f"{len(wrong)} stock figure(s) differ from Extend's, e.g. {wrong[0]}")
    return problems


def run_vendure_demo(
    *,
    duration: float,
    seed: int,
    products: int,
    orders_per_second: float,
    data_dir: Path | None,
    settle_seconds: float,
    say: Say,
) -> int:
    try:
        install.check_node()
    except install.NodeMissing as exc:
        say(f"demo --shop vendure: {exc}. Or run `demo` without --shop.")
        return EXIT_CANNOT_RUN
    with ExitStack() as stack:
        # The shop's packages: $EXTEND_CONNECTOR_VENDURE_DIR, else in the data directory, else
        # (a temporary run) in the user's cache, so a second run does not install again.
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ec-vendure-")))
            shop_dir = Path.home() / ".cache" / "extend-connector" / "vendure-shop"
        else:
            shop_dir = data_dir / "vendure-shop"
        shop_dir = Path(os.environ.get("EXTEND_CONNECTOR_VENDURE_DIR") or shop_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        say(f"installing the Vendure shop into {shop_dir} (npm, first use only) ...")
        seconds = install.install(shop_dir)
        say(
            f"Vendure shop ready ({seconds:.0f} s)" if seconds else "Vendure shop already installed"
        )
        from extend_connector.service import Connector

        sock = reserve_port()
        port = sock.getsockname()[1]
        connector_url = f"http://127.0.0.1:{port}"
        log_stream = log_to_file(data_dir / "connector.log")
        stack.callback(log_stream.close)
        config = replace(
            simulator_config(seed=seed, products=products, orders_per_second=orders_per_second),
            webhooks=(
                WebhookRegistration(
                    callback_url=f"{connector_url}/webhooks/extend", secret=WEBHOOK_SECRET
                ),
            ),
        )
        sim = stack.enter_context(run_in_thread(config))
        base = stack.enter_context(_vendure(shop_dir, data_dir, connector_url, say))
        admin = Gql(f"{base}/admin-api")
        stack.callback(admin.close)
        admin('mutation { login(username: "superadmin", password: "superadmin") { __typename } }')
        have = {
            loc["name"]
            for loc in admin("{ stockLocations { items { name } } }")["stockLocations"]["items"]
        }
        for name in _locations().values():
            if name not in have:
                admin(
                    "mutation($n: String!) { createStockLocation(input: {name: $n}) { id } }",
                    n=name,
                )
        settings = vendure_settings(
            sim=sim, data_dir=data_dir, port=port, admin_url=f"{base}/admin-api"
        )
        connector = Connector(settings)
        stack.callback(connector.close)
        stack.enter_context(connector.serve_in_thread(sock=sock, timeout=60))
        log_to_file(data_dir / "connector.log", stream=log_stream)
        say(f"connector  {connector_url}   simulator {sim.base_url}   data + logs: {data_dir}")
        import asyncio

        from extend_connector.service import SWEEPS

        for name in ("products", "prices"):
            result = asyncio.run(SWEEPS[name](False, False, None))
            say(f"first load: {name} ({result.records} record(s)) -> Vendure")

        def catalogue() -> int:
            items = admin(
                "{ productVariants(options: {take: 1000, filter: {enabled: {eq: true}}}) "
                "{ totalItems } }"
            )
            return int(items["productVariants"]["totalItems"])

        deadline = time.monotonic() + 120
        while catalogue() < min(products, 10) and time.monotonic() < deadline:
            time.sleep(1.0)
        say(f"Vendure sells {catalogue()} product(s) from Extend, with Extend's list prices")
        shopper = Shopper(base, orders_per_second, seed)
        driver = ExtendDriver(
            sim,
            ref_prefix="",
            warehouses=SELL_FROM,
            products=products,
            chaos=False,
            duration=duration,
            seed=seed,
        )
        shopper.start()
        driver.start()
        started = time.monotonic()
        try:
            while time.monotonic() - started < duration:
                time.sleep(min(5.0, duration))
                say(
                    f"{time.monotonic() - started:4.0f} s  orders paid in Vendure "
                    f"{len(shopper.codes)}  reserved {driver.reserved}  picked {driver.picked}"
                    f"  stock moves {driver.stock_moves}"
                )
        except KeyboardInterrupt:
            say("interrupted: settling what was placed")
        shopper.stop()
        driver.stop()
        say("settling: waiting for Extend and Vendure to agree ...")
        problems: list[str] = []
        deadline = time.monotonic() + settle_seconds
        while time.monotonic() < deadline:
            _ship_the_rest(sim, shopper.codes)
            problems = _problems(sim, admin, shopper.codes)
            if not problems:
                break
            time.sleep(2.0)
        if problems:
            for p in problems:
                say(f"CHECK FAILED: {p}")
            return EXIT_CHECK_FAILED
        say(
            f"CHECK PASSED: {len(shopper.codes)} Vendure order(s) in Extend exactly once, every "
            "picked one Shipped in Vendure with its tracking code, Vendure's stock equal to "
            f"Extend's ({shopper.failed} checkout(s) the shop refused, e.g. out of stock)"
        )
        return EXIT_PASSED
    return EXIT_CHECK_FAILED  # pragma: no cover (the ExitStack does not swallow)
