"""Seeded, deterministic test data in Extend's shape: the same seed and sizes give the same data.

Warehouses, products (Swedish-style names, EAN-13 with a valid check digit, VAT 25/12/6,
units), B2B customers (organisation numbers with a valid Luhn digit, price lists, customer
groups, discount lists, salespersons), B2C customers, price lists, discount lists,
campaigns and initial balances. Built for 100,000 products in a few seconds: one
`random.Random`, plain loops, no per-record formatting beyond what is stored.
Change dates are spread over the 30 days before the clock's start.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from extend_connector.simulator.records import (
    Balance,
    Campaign,
    Customer,
    DiscountList,
    PriceList,
    Product,
)

_ADJECTIVES = (
    "Stor",
    "Liten",
    "Röd",
    "Blå",
    "Grön",
    "Svart",
    "Vit",
    "Ekologisk",
    "Klassisk",
    "Robust",
    "Lätt",
    "Mjuk",
    "Nordisk",
    "Gammaldags",
    "Smidig",
    "Tålig",
    "Ljus",
    "Mörk",
)
_NOUNS = (
    "Skruvdragare",
    "Borrmaskin",
    "Kaffebryggare",
    "Taklampa",
    "Pinnstol",
    "Matbord",
    "Yllefilt",
    "Knäckebröd",
    "Lingonsylt",
    "Kokbok",
    "Vattenkokare",
    "Regnjacka",
    "Gummistövlar",
    "Ryggsäck",
    "Skärbräda",
    "Stekpanna",
    "Termos",
    "Hammare",
    "Tumstock",
    "Handduk",
    "Kuddfodral",
    "Barnbok",
    "Kaffebönor",
    "Hushållspapper",
    "Diskborste",
    "Cykelhjälm",
    "Pannlampa",
    "Sovsäck",
)
# (product group, VAT percent, units); food 12 %, books 6 %, the rest 25 %.
_GROUPS: tuple[tuple[str, float, tuple[str, ...]], ...] = (
    ("VERKTYG", 25.0, ("ST",)),
    ("HEM", 25.0, ("ST", "FRP")),
    ("KLADER", 25.0, ("ST",)),
    ("LIVS", 12.0, ("ST", "KG", "FRP")),
    ("BOCKER", 6.0, ("ST",)),
    ("FRITID", 25.0, ("ST",)),
)
_FOOD_NOUNS = {"Knäckebröd", "Lingonsylt", "Kaffebönor"}
_BOOK_NOUNS = {"Kokbok", "Barnbok"}
_FIRST = (
    "Anna",
    "Erik",
    "Maria",
    "Lars",
    "Karin",
    "Johan",
    "Eva",
    "Anders",
    "Sara",
    "Per",
    "Lena",
    "Mikael",
    "Emma",
    "Olof",
    "Ingrid",
    "Nils",
    "Astrid",
    "Gustav",
    "Elsa",
    "Björn",
)
_LAST = (
    "Andersson",
    "Johansson",
    "Karlsson",
    "Nilsson",
    "Eriksson",
    "Larsson",
    "Olsson",
    "Persson",
    "Svensson",
    "Gustafsson",
    "Pettersson",
    "Lindberg",
    "Lindqvist",
    "Åberg",
    "Öberg",
    "Holm",
)
_TRADES = (
    "Bygg",
    "El",
    "Måleri",
    "Trädgård",
    "Café",
    "Bokhandel",
    "Järn",
    "Fastighets",
    "Städ",
    "VVS",
)
_FORMS = ("AB", "AB", "AB", "HB", "Ekonomisk förening")
_CITIES = (
    ("Stockholm", "11"),
    ("Göteborg", "41"),
    ("Malmö", "21"),
    ("Uppsala", "75"),
    ("Västerås", "72"),
    ("Örebro", "70"),
    ("Linköping", "58"),
    ("Umeå", "90"),
    ("Luleå", "97"),
    ("Visby", "62"),
)
_STREETS = (
    "Storgatan",
    "Kungsgatan",
    "Drottninggatan",
    "Skolgatan",
    "Kyrkvägen",
    "Industrivägen",
    "Björkvägen",
    "Sjövägen",
    "Hamngatan",
    "Järnvägsgatan",
)
_SALESPERSONS = (
    "Martin Fransson",
    "Ellen Fransson",
    "Pontus Carme",
    "Josefin Kvillert",
    "Anton Bildh",
)
_CUSTOMER_GROUPS = ("ÅTERFÖRSÄLJARE", "STORKUND", "OFFENTLIG", "HANTVERKARE")

WEB_CUSTOMER = "WEB"
"""The anonymous webshop customer (the connector's default `scope.default_customer_number`)."""


def ean13(first12: str) -> str:
    """Append the GS1 check digit to 12 digits."""
    if len(first12) != 12 or not first12.isdigit():
        raise ValueError("need exactly 12 digits")
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(first12))
    return first12 + str((10 - total % 10) % 10)


def luhn_digit(digits: str) -> str:
    """The Luhn check digit Swedish organisation numbers end with."""
    total = 0
    for i, d in enumerate(digits):
        n = int(d) * (2 if i % 2 == 0 else 1)
        total += n - 9 if n > 9 else n
    return str((10 - total % 10) % 10)


@dataclass(slots=True, kw_only=True)
class Dataset:
    products: list[Product]
    customers: list[Customer]
    balances: list[Balance]
    price_lists: list[PriceList]
    discount_lists: list[DiscountList]
    campaigns: list[Campaign]


def generate(
    *,
    seed: int,
    products: int,
    customers: int,
    b2b_share: float,
    warehouses: tuple[str, ...],
    price_lists: int,
    discount_lists: int,
    campaigns: int,
    start_ms: int,
) -> Dataset:
    """Build the data set. Same arguments, same data."""
    rnd = random.Random(seed)
    month_ms = 30 * 86_400_000
    ds = Dataset(
        products=[], customers=[], balances=[], price_lists=[], discount_lists=[], campaigns=[]
    )

    product_numbers: list[str] = []
    for i in range(products):
        noun = _NOUNS[rnd.randrange(len(_NOUNS))]
        if noun in _FOOD_NOUNS:
            group, vat, units = _GROUPS[3]
        elif noun in _BOOK_NOUNS:
            group, vat, units = _GROUPS[4]
        else:
            group, vat, units = _GROUPS[(0, 1, 2, 5)[rnd.randrange(4)]]
        number = f"P{i + 1:06d}"
        changed = start_ms - rnd.randrange(month_ms)
        ds.products.append(
            Product(
                product_number=number,
                product_name=f"{_ADJECTIVES[rnd.randrange(len(_ADJECTIVES))]} {noun.lower()} "
                f"{rnd.randrange(10, 99)}",
                product_notes=None if rnd.random() < 0.7 else "Säljs i hela förpackningar",
                unit=units[rnd.randrange(len(units))],
                ean=ean13(f"73{rnd.randrange(10**10):010d}"),
                vat_percent=vat,
                customs_commodity_code=f"{rnd.randrange(10**7, 10**8)}",
                supply_mode="Warehouse" if rnd.random() < 0.95 else "Direct",
                phase_out=rnd.random() < 0.02,
                product_group=group,
                list_price=round(rnd.uniform(9, 4999), 2),
                changed_ms=changed,
                price_changed_ms=changed,
            )
        )
        product_numbers.append(number)
        # Each product is stocked in the first warehouse and, now and then, the others.
        for w_index, warehouse in enumerate(warehouses):
            if w_index == 0 or rnd.random() < 0.5:
                ds.balances.append(
                    Balance(
                        product_number=number,
                        warehouse=warehouse,
                        physical=float(rnd.randrange(0, 500)),
                        changed_ms=changed,
                    )
                )

    for p in range(price_lists):
        pl = PriceList(name=f"PL{p + 1}")
        share = 0.2
        for product in ds.products:
            if rnd.random() < share:
                pl.entries[product.product_number] = round(
                    product.list_price * rnd.uniform(0.75, 0.97), 2
                )
                pl.entry_changed_ms[product.product_number] = start_ms - rnd.randrange(month_ms)
        ds.price_lists.append(pl)

    for d in range(discount_lists):
        dl = DiscountList(name=f"RAB{d + 1}", changed_ms=start_ms - rnd.randrange(month_ms))
        for group, _vat, _units in _GROUPS:
            if rnd.random() < 0.6:
                dl.by_group[group] = float(rnd.choice((5, 10, 12.5, 15, 20)))
        for _ in range(min(20, len(product_numbers))):
            dl.by_product[product_numbers[rnd.randrange(len(product_numbers))]] = float(
                rnd.choice((25, 30))
            )
        ds.discount_lists.append(dl)

    day = 86_400_000
    for c in range(campaigns):
        # A mix of running, finished and coming campaigns around the start instant.
        kind = c % 3
        if kind == 0:
            valid_from, valid_to = start_ms - 5 * day, start_ms + 10 * day
        elif kind == 1:
            valid_from, valid_to = start_ms - 20 * day, start_ms - 2 * day
        else:
            valid_from, valid_to = start_ms + 3 * day, start_ms + 17 * day
        prices: dict[str, float] = {}
        by_number = {
            p.product_number: p for p in ds.products[: max(1, min(len(ds.products), 5000))]
        }
        for _ in range(min(50, len(by_number))):
            number = product_numbers[rnd.randrange(len(by_number))]
            prices[number] = round(by_number[number].list_price * rnd.uniform(0.6, 0.9), 2)
        ds.campaigns.append(
            Campaign(
                code=f"KAMP{c + 1}",
                name=f"Kampanj {c + 1}",
                prices=prices,
                valid_from_ms=valid_from,
                valid_to_ms=valid_to,
                customer_group=None
                if rnd.random() < 0.7
                else _CUSTOMER_GROUPS[rnd.randrange(len(_CUSTOMER_GROUPS))],
                changed_ms=min(valid_from, start_ms) - day,
            )
        )

    ds.customers.append(
        Customer(
            customer_number=WEB_CUSTOMER,
            customer_type="B2C",
            name="Webbshop",
            last_name="Kund",
            organization_number=None,
            customer_group=None,
            price_list=None,
            discount_list=None,
            salesperson=None,
            email="webshop@example.se",
            phone=None,
            addresses=[
                _address(rnd, "Delivery", "Webbshop Kund"),
                _address(rnd, "Invoice", "Webbshop Kund"),
            ],
            changed_ms=start_ms - month_ms,
            pricing_changed_ms=start_ms - month_ms,
        )
    )
    for i in range(customers):
        changed = start_ms - rnd.randrange(month_ms)
        number = f"{10001 + i}"
        if rnd.random() < b2b_share:
            name = (
                f"{_LAST[rnd.randrange(len(_LAST))]}s {_TRADES[rnd.randrange(len(_TRADES))]} "
                f"{_FORMS[rnd.randrange(len(_FORMS))]}"
            )
            digits = f"55{rnd.randrange(10**7):07d}"
            orgno = digits + luhn_digit(digits)
            ds.customers.append(
                Customer(
                    customer_number=number,
                    customer_type="B2B",
                    name=name,
                    last_name=None,
                    organization_number=f"{orgno[:6]}-{orgno[6:]}",
                    customer_group=_CUSTOMER_GROUPS[rnd.randrange(len(_CUSTOMER_GROUPS))],
                    price_list=ds.price_lists[rnd.randrange(len(ds.price_lists))].name
                    if ds.price_lists and rnd.random() < 0.8
                    else None,
                    discount_list=ds.discount_lists[rnd.randrange(len(ds.discount_lists))].name
                    if ds.discount_lists and rnd.random() < 0.5
                    else None,
                    salesperson=_SALESPERSONS[rnd.randrange(len(_SALESPERSONS))],
                    email=f"order@kund{number}.se",
                    phone=f"+46 8 {rnd.randrange(100, 999)} {rnd.randrange(10, 99)} "
                    f"{rnd.randrange(10, 99)}",
                    addresses=[_address(rnd, "Delivery", name), _address(rnd, "Invoice", name)],
                    changed_ms=changed,
                    pricing_changed_ms=changed,
                )
            )
        else:
            first, last = _FIRST[rnd.randrange(len(_FIRST))], _LAST[rnd.randrange(len(_LAST))]
            ds.customers.append(
                Customer(
                    customer_number=number,
                    customer_type="B2C",
                    name=first,
                    last_name=last,
                    organization_number=None,
                    customer_group=None,
                    price_list=None,
                    discount_list=None,
                    salesperson=None,
                    email=f"{first.lower()}.{number}@example.se",
                    phone=f"+46 70 {rnd.randrange(100, 999)} {rnd.randrange(10, 99)} "
                    f"{rnd.randrange(10, 99)}",
                    addresses=[_address(rnd, "Delivery", f"{first} {last}")],
                    changed_ms=changed,
                    pricing_changed_ms=changed,
                )
            )
    return ds


def _address(rnd: random.Random, kind: str, name: str) -> dict[str, str | None]:
    city, zip_prefix = _CITIES[rnd.randrange(len(_CITIES))]
    return {
        "type": kind,
        "name": name,
        "careOf": None,
        "addressLine1": f"{_STREETS[rnd.randrange(len(_STREETS))]} {rnd.randrange(1, 120)}",
        "addressLine2": None,
        "zipCode": f"{zip_prefix}{rnd.randrange(1, 10)} {rnd.randrange(10, 99)}",
        "city": city,
        "countryCode": "SE",
        "phone": None,
        "email": None,
    }
