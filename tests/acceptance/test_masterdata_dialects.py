"""Master data (`extend-connector sync products|customers|prices`) with real processes, in the
house contract and in a second dialect (support/dialects.py: other credential header, paging
names, header envelope, UTC change dates, a renamed product field, null empty lists).

A small data set (300 products, 30 customers, half B2B) so both dialects cost seconds; the same
checks as the full-size scenario (test_masterdata_full_size.py, whose `Stack` this reuses): a
first sync exact, then after a few changes in Extend exactly those records fetched and right.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from acceptance.test_masterdata_full_size import Stack
from support.dialects import DIALECTS, configure_connector, simulator_args
from support.processes import CLI, Proc, free_port, running

pytestmark = pytest.mark.slow

PRODUCTS = 300
CUSTOMERS = 30


@pytest.fixture(params=DIALECTS)
def stack(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    dialect: str = request.param
    tmp = tmp_path_factory.mktemp(f"masterdata-{dialect}")
    configure_connector(dialect, tmp)
    port = free_port()
    sim = Proc(
        "simulator",
        [
            *CLI,
            "simulator",
            "--port",
            str(port),
            "--products",
            str(PRODUCTS),
            "--customers",
            str(CUSTOMERS),
            "--b2b-share",
            "0.5",
            "--no-rate-limits",
            "--no-webhook",
            *simulator_args(dialect),
        ],
        env={},
        log_dir=tmp,
        health_url=f"http://127.0.0.1:{port}/_sim/health",
    )
    with running(sim):
        s = Stack(tmp, port)
        try:
            yield s
        finally:
            s.http.close()
            s.db.dispose()


def test_first_sync_exact_then_exactly_the_changes(stack: Stack) -> None:
    stack.sync_all()
    assert len(stack.local_products()) == PRODUCTS
    assert stack.local_products() == stack.sim_products()
    truth_customers = stack.sim_customers()
    assert len(truth_customers) == CUSTOMERS + 1  # plus the anonymous webshop customer
    assert stack.local_customers() == truth_customers
    kept = ["WEB", *sorted(n for n, c in truth_customers.items() if c[1])]
    assert len(kept) > 1
    for number in kept:
        truth = stack.sim_prices(number)
        assert truth and stack.local_prices(number) == truth, number

    products = sorted(stack.sim_products())
    changed_products = products[100:105]
    for i, number in enumerate(changed_products):
        stack.admin("PATCH", f"/products/{number}", json={"productName": f"Renamed {i}"})
    changed_customers = sorted(n for n in truth_customers if n != "WEB")[:3]
    for number in changed_customers:
        stack.admin("PATCH", f"/customers/{number}", json={"salesperson": "CHANGED"})

    mark = stack.last_outbox_id()
    calls = stack.sync_all()
    assert calls.get("GET /Products/{productNumber}") == 5, calls
    assert calls.get("GET /Customers/{customerNumber}") == 3, calls
    assert stack.local_products() == stack.sim_products()
    assert stack.local_customers() == stack.sim_customers()
    told = {
        k for t, k, _ in stack.outbox_after(mark) if t in ("product.changed", "customer.changed")
    }
    assert told == {f"sku:{n}" for n in changed_products} | {
        f"customer:{n}" for n in changed_customers
    }
