"""`extend-connector probe`: read-only checks of the dialect's assumptions against a live Extend.

Each check is one `Finding` (assumption, verdict held / differs / could not tell, evidence,
the dialect settings that would make it hold, whether a difference blocks the connector). The
reads go through `ExtendClient.probe_get`, so they stay within the rate budget. The raw answers
seen are kept (redacted) so they can be saved as a sample file.

Covered now: authentication (and which header/scheme works), the list envelope, paging (page 2
differs from page 1, the page size is honoured), the change-date filter (accepted, inclusive at
the exact instant of a record), the product-number and warehouse filters, rate-limit
headers, the error body of an unknown product, and the fields (missing, renamed, extra, null,
numbers sent as strings, date-times without a UTC offset) of the list models and of the detail
models the connector reads: an order by number (header, rows, shipments and their rows) and one
customer's prices.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import httpx2
from pydantic import BaseModel

from extend_connector.redact import redact_value

from .client import ExtendClient
from .wire import (
    WireAvailability,
    WireCustomer,
    WireOrder,
    WireOrderHeader,
    WireOrderLight,
    WireOrderRow,
    WirePrice,
    WireProduct,
    WireShipment,
    WireShipmentRow,
)

Verdict = Literal["held", "differs", "could not tell"]

AUTH_CANDIDATES: tuple[tuple[str, str], ...] = (
    ("Authorization", "Bearer"),
    ("Authorization", ""),
    ("X-Api-Key", ""),
    ("Api-Key", ""),
)
"""(header, scheme) tried when the configured credential header is refused."""

PAGING_CANDIDATES: tuple[tuple[str, str], ...] = (
    ("page", "pageSize"),
    ("pageNo", "take"),
    ("pageNumber", "pageSize"),
    ("pageNo", "pageSize"),
    ("page", "limit"),
    ("page", "size"),
    ("pageIndex", "pageSize"),
)
"""(page, page size) parameter names tried when the configured ones are not honoured (1-based)."""

CHANGED_SINCE_CANDIDATES: tuple[str, ...] = (
    "changedSince",
    "modifiedSince",
    "changedAfter",
    "modifiedAfter",
    "updatedSince",
    "lastModified",
    "changedDate",
)
"""Change-date parameter names tried (each in both date formats) when the configured one does
not narrow the list."""

FAR_FUTURE = datetime(2999, 1, 1, tzinfo=UTC)
"""A change date after every record: a filter that works answers no record for it."""

LIST_MODELS: tuple[tuple[str, type[BaseModel]], ...] = (
    ("list_products", WireProduct),
    ("list_customers", WireCustomer),
    ("list_availability", WireAvailability),
    ("list_orders", WireOrderLight),
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Finding:
    assumption: str
    verdict: Verdict
    evidence: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    """dotted key under [extend.dialect] -> value that would make the assumption hold."""
    blocking: bool = True


@dataclass(kw_only=True, slots=True)
class ProbeReport:
    findings: list[Finding] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def blocking(self) -> list[Finding]:
        return [f for f in self.findings if f.verdict == "differs" and f.blocking]

    def table(self) -> str:
        width = max((len(f.assumption) for f in self.findings), default=10)
        lines = [f"{'assumption'.ljust(width)}  {'verdict':<14}  evidence"]
        for f in self.findings:
            mark = f.verdict + (" (!)" if f.verdict == "differs" and f.blocking else "")
            lines.append(f"{f.assumption.ljust(width)}  {mark:<14}  {f.evidence}")
        return "\n".join(lines)

    def toml(self) -> str:
        """The [extend.dialect] settings that would make every differing assumption hold."""
        plain: dict[str, Any] = {}
        tables: dict[str, dict[str, Any]] = {}
        for f in self.findings:
            for key, value in f.settings.items():
                if "." in key:
                    table, name = key.rsplit(".", 1)
                    tables.setdefault(table, {})[name] = value
                else:
                    plain[key] = value
        out: list[str] = []
        if plain:
            out.append("[extend.dialect]")
            out += [f"{k} = {json.dumps(v)}" for k, v in plain.items()]
        for table, values in tables.items():
            out.append(f"\n[extend.dialect.{table}]")
            out += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
        return "\n".join(out).strip() + "\n" if out else ""

    def sample_json(self) -> str:
        return json.dumps({"answers": self.samples}, indent=2, ensure_ascii=False, default=str)


def _body(response: httpx2.Response) -> Any:
    try:
        return json.loads(response.content, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError):
        return None


def _sample_body(response: httpx2.Response) -> Any:
    """The answer as plain JSON for the sample file (numbers stay numbers)."""
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return response.text[:2000]


def _items(body: Any) -> tuple[list[Any] | None, Literal["body", "headers"] | None]:
    if isinstance(body, list):
        return body, "headers"
    if isinstance(body, dict):
        for key, value in body.items():
            if key.lower() == "items" and isinstance(value, list):
                return value, "body"
    return None, None


class Prober:
    def __init__(self, client: ExtendClient, *, page_size: int = 2) -> None:
        self.client = client
        self.dialect = client.dialect
        self.page_size = page_size
        self.report = ProbeReport()
        self.auth: Mapping[str, str] | None = None  # the working credential, once found
        # The paging names that work, once found (the configured ones until then).
        self.page_param = self.dialect.page_param
        self.page_size_param = self.dialect.page_size_param
        # The change-date filter that narrows lists (name, date format), once found.
        self.since: tuple[str, Literal["offset", "utc"]] | None = None

    def _find(self, finding: Finding) -> None:
        self.report.findings.append(finding)

    async def _get(
        self,
        operation: str,
        params: Mapping[str, str] | None = None,
        *,
        path_values: Mapping[str, str] | None = None,
        auth: Mapping[str, str] | None = None,
    ) -> httpx2.Response:
        response = await self.client.probe_get(
            operation, params=params, path_values=path_values, auth=auth or self.auth
        )
        self.report.samples.append(
            {
                "operation": operation,
                "method": response.request.method,
                "path": response.request.url.path,
                "query": response.request.url.query.decode("ascii", "replace"),
                "params": dict(params or {}),
                "path_values": dict(path_values or {}),
                "status": response.status_code,
                "headers": {
                    k: v
                    for k, v in response.headers.items()
                    if k.lower().startswith("x-") or k.lower() == "content-type"
                },
                "body": redact_value(_sample_body(response)),
            }
        )
        return response

    def _page(self, number: int, size: int | None = None) -> dict[str, str]:
        return {
            self.page_param: str(number),
            self.page_size_param: str(size or self.page_size),
        }

    async def run(self) -> ProbeReport:
        if not await self._auth():
            return self.report
        first = await self._paging()
        await self._changed_since(first)
        await self._filters(first)
        await self._rate_limit_headers()
        await self._error_body()
        listed = {
            operation: await self._fields(operation, model) for operation, model in LIST_MODELS
        }
        await self._details(listed["list_orders"], listed["list_customers"])
        await self._order_window(listed["list_orders"])
        return self.report

    async def _auth(self) -> bool:
        response = await self._get("list_products", self._page(1))
        if response.is_success:
            self._find(
                Finding(
                    assumption="authentication",
                    verdict="held",
                    evidence=f"configured credential header answered {response.status_code}",
                )
            )
            return True
        token = _token(self.dialect.auth())
        for header, scheme in AUTH_CANDIDATES:
            attempt = {header: f"{scheme} {token}" if scheme else token}
            if attempt == dict(self.dialect.auth()):
                continue
            tried = await self._get("list_products", self._page(1), auth=attempt)
            if tried.is_success:
                self._find(
                    Finding(
                        assumption="authentication",
                        verdict="differs",
                        evidence=f"configured header answered {response.status_code}; "
                        f"`{header}: {scheme + ' ' if scheme else ''}<token>` answered "
                        f"{tried.status_code}",
                        settings={"auth_header": header, "auth_scheme": scheme},
                    )
                )
                self.auth = attempt  # the other checks go on with the credential that works
                return True
        self._find(
            Finding(
                assumption="authentication",
                verdict="differs",
                evidence=f"every header tried answered {response.status_code}: check "
                "extend.api_token and extend.base_url",
            )
        )
        return False

    async def _paging(self) -> list[Any]:
        one = await self._get("list_products", self._page(1))
        items, envelope = _items(_body(one))
        if items is None or envelope is None:
            self._find(
                Finding(
                    assumption="list envelope",
                    verdict="could not tell",
                    evidence=f"list_products answered neither a list nor {{items: [...]}}: "
                    f"{one.text[:120]!r}",
                )
            )
            return []
        self._find(
            Finding(
                assumption="list envelope",
                verdict="held" if envelope == self.dialect.envelope else "differs",
                evidence=f"configured {self.dialect.envelope!r}; Extend answered {envelope!r}",
                settings={} if envelope == self.dialect.envelope else {"envelope": envelope},
            )
        )
        if len(items) > self.page_size:
            items = await self._paging_names(items)
        else:
            self._find(
                Finding(
                    assumption="page-size parameter",
                    verdict="held",
                    evidence=f"{self.page_size_param}={self.page_size} -> {len(items)}",
                )
            )
        two = await self._get("list_products", self._page(2))
        second, _ = _items(_body(two))
        if len(items) < self.page_size or second is None:
            verdict: Verdict = "could not tell"
            evidence = f"page 1 had {len(items)} records; too few to see a second page"
        elif second and second != items:
            verdict, evidence = "held", f"{self.page_param}=2 answered other records"
        else:
            verdict = "differs"
            evidence = f"{self.page_param}=2 answered the same records as page 1"
        settings = (
            {"page_param": self.page_param}
            if verdict == "held" and self.page_param != self.dialect.page_param
            else {}
        )
        if settings:
            verdict = "differs"
            evidence = (
                f"{self.dialect.page_param}=2 is not honoured; {self.page_param}=2 answered "
                "other records"
            )
        self._find(
            Finding(
                assumption="page parameter", verdict=verdict, evidence=evidence, settings=settings
            )
        )
        await self._configured_page_size()
        return items

    async def _configured_page_size(self) -> None:
        """Whether Extend serves pages of the configured `page_size` whole: a server that cuts
        them shorter without saying so (no page size, no totals) would look finished after one
        page, and a balance read as missing is read as 0."""
        size = self.dialect.page_size
        response = await self._get("list_products", self._page(1, size))
        body = _body(response)
        items, style = _items(body)
        if not response.is_success or items is None or style is None:
            self._find(
                Finding(
                    assumption="configured page size",
                    verdict="could not tell",
                    evidence=f"{self.page_size_param}={size} answered {response.status_code}",
                )
            )
            return
        page = self.dialect.page_envelope(style).parse(body, response.headers, requested_page=1)
        served, total = page.page_size, page.total_count
        if len(items) >= size or (served is not None and served >= size):
            verdict: Verdict = "held"
            evidence = f"{self.page_size_param}={size} -> {len(items)} records"
        elif (served is not None and served < size) or (total is not None and total > len(items)):
            cap = served if served is not None else len(items)
            self._find(
                Finding(
                    assumption="configured page size",
                    verdict="differs",
                    evidence=f"{self.page_size_param}={size} -> {len(items)} records"
                    + (f" of {total}" if total is not None else "")
                    + (f", page size {served}" if served is not None else ""),
                    settings={"page_size": cap},
                )
            )
            return
        else:
            verdict = "could not tell"
            evidence = (
                f"{self.page_size_param}={size} -> {len(items)} records and no total: fewer "
                "products than a page"
            )
        self._find(Finding(assumption="configured page size", verdict=verdict, evidence=evidence))

    async def _paging_names(self, unpaged: list[Any]) -> list[Any]:
        """The configured page size is not honoured: find the names that are, among the usual
        ones; the rest of the probe pages with them. Returns page 1 as those names ask it."""
        asked = f"{self.dialect.page_size_param}={self.page_size}"
        for page_name, size_name in PAGING_CANDIDATES:
            if size_name == self.dialect.page_size_param:
                continue
            tried = await self._get(
                "list_products", {page_name: "1", size_name: str(self.page_size)}
            )
            items, _ = _items(_body(tried))
            if tried.is_success and items is not None and 0 < len(items) <= self.page_size:
                self.page_param, self.page_size_param = page_name, size_name
                self._find(
                    Finding(
                        assumption="page-size parameter",
                        verdict="differs",
                        evidence=f"asked {asked}, got {len(unpaged)} records; "
                        f"{size_name}={self.page_size} -> {len(items)}",
                        settings={"page_size_param": size_name},
                    )
                )
                return items
        self._find(
            Finding(
                assumption="page-size parameter",
                verdict="differs",
                evidence=f"asked {asked}, got {len(unpaged)} records, and none of "
                f"{sorted({c[1] for c in PAGING_CANDIDATES})} was honoured either: set "
                "page_size_param (and page_param) to Extend's names",
            )
        )
        return unpaged

    def _since(self, name: str, fmt: Literal["offset", "utc"], at: datetime) -> dict[str, str]:
        dialect = replace(self.dialect, changed_since_format=fmt)
        return {**self._page(1, 500), name: dialect.format_datetime(at)}

    async def _narrows(self, name: str, fmt: Literal["offset", "utc"]) -> httpx2.Response:
        """The list asked for changes after every record (it answers none if the filter works)."""
        return await self._get("list_products", self._since(name, fmt, FAR_FUTURE))

    async def _changed_since_name(self) -> tuple[str, Literal["offset", "utc"], str] | None:
        """(name, format, evidence) of a change-date filter that narrows the list: the
        configured one first, then the usual names in both formats."""
        configured = (self.dialect.changed_since_param, self.dialect.changed_since_format)
        other: Literal["offset", "utc"] = "utc" if configured[1] == "offset" else "offset"
        tries: list[tuple[str, Literal["offset", "utc"]]] = [configured]
        tries.append((configured[0], other))
        tries += [
            (n, f)
            for n in CHANGED_SINCE_CANDIDATES
            for f in (configured[1], other)
            if n != configured[0]
        ]
        first = ""
        for name, fmt in tries:
            response = await self._narrows(name, fmt)
            found, _ = _items(_body(response))
            if not first:
                first = f"{name} after every change answered {response.status_code}" + (
                    f" with {len(found)} records" if found is not None else ""
                )
            if response.is_success and found == []:
                return name, fmt, first
        return None

    async def _changed_since(self, items: list[Any]) -> None:
        stamps: list[tuple[str, Any]] = []
        for i in items:
            value = i.get("changedDate") or i.get("ChangedDate") if isinstance(i, dict) else None
            if isinstance(value, str):
                stamps.append((value, i))
        if not stamps:
            self._find(
                Finding(
                    assumption="change-date filter",
                    verdict="could not tell",
                    evidence="no record with a changedDate to filter on",
                    blocking=False,
                )
            )
            return
        working = await self._changed_since_name()
        if working is None:
            self._find(
                Finding(
                    assumption="change-date filter",
                    verdict="differs",
                    evidence=f"{self.dialect.changed_since_param} does not narrow the list, nor "
                    f"do {list(CHANGED_SINCE_CANDIDATES)} in either date format: set "
                    "changed_since_param to Extend's name",
                )
            )
            return
        name, fmt, first = working
        self.since = (name, fmt)
        settings: dict[str, str] = {}
        if name != self.dialect.changed_since_param:
            settings["changed_since_param"] = name
        if fmt != self.dialect.changed_since_format:
            settings["changed_since_format"] = fmt
        stamp, record = stamps[-1]
        instant = self.dialect.aware(datetime.fromisoformat(stamp.replace("Z", "+00:00")))
        params = self._since(name, fmt, instant)
        at = params[name]
        response = await self._get("list_products", params)
        found, _ = _items(_body(response))
        inclusive = response.is_success and found is not None and record in found
        if settings:
            evidence = f"{first}; {name} in {fmt!r} dates narrows it"
        else:
            evidence = f"{name} after every change answered no record"
        evidence += (
            f"; {name}={at}: the record changed at that instant "
            f"{'is' if inclusive else 'is NOT'} in the {len(found or [])} answered"
        )
        self._find(
            Finding(
                assumption="change-date filter (name, date format, inclusive at the instant)",
                verdict="held" if inclusive and not settings else "differs",
                evidence=evidence,
                settings=settings,
            )
        )

    async def _filters(self, products: list[Any]) -> None:
        """The product-number and warehouse filters of the availability list narrow it."""
        renames = self.dialect.field_renames.get("WireProduct", {})
        sent_name = next((k for k, v in renames.items() if v == "productNumber"), "productnumber")
        numbers = [
            v
            for p in products
            if isinstance(p, dict)
            for k, v in p.items()
            if k.lower() == sent_name and isinstance(v, str)
        ]
        checks = (
            ("product-number filter", self.dialect.product_numbers_param, numbers[:1], "product"),
            ("warehouse filter", self.dialect.warehouse_param, None, "warehouse"),
        )
        for assumption, param, values, key in checks:
            if values is None:
                whole = await self._get("list_availability", self._page(1, 50))
                rows, _ = _items(_body(whole))
                values = sorted(
                    {
                        v
                        for r in rows or []
                        if isinstance(r, dict)
                        for k, v in r.items()
                        if k.lower() == "warehouse" and isinstance(v, str)
                    }
                )[:1]
            if not values:
                self._find(
                    Finding(
                        assumption=assumption,
                        verdict="could not tell",
                        evidence="no value to filter on",
                        blocking=False,
                    )
                )
                continue
            response = await self._get("list_availability", {**self._page(1, 50), param: values[0]})
            rows, _ = _items(_body(response))
            seen = {
                v
                for r in rows or []
                if isinstance(r, dict)
                for k, v in r.items()
                if isinstance(v, str) and key in k.lower() and ("number" in k.lower() or key == k)
            }
            held = response.is_success and bool(rows) and seen == {values[0]}
            self._find(
                Finding(
                    assumption=assumption,
                    verdict="held" if held else "differs",
                    evidence=f"{param}={values[0]} answered {response.status_code} with "
                    f"{len(rows or [])} records of {sorted(seen)[:3]}",
                )
            )

    async def _rate_limit_headers(self) -> None:
        sample = self.report.samples[-1]["headers"] if self.report.samples else {}
        names = {k.lower() for k in sample}
        wanted = [
            self.dialect.rate_limit_limit_header,
            self.dialect.rate_limit_remaining_header,
            self.dialect.rate_limit_reset_header,
        ]
        missing = [n for n in wanted if n.lower() not in names]
        seen = sorted(n for n in names if "rate" in n or "limit" in n)
        self._find(
            Finding(
                assumption="rate-limit headers",
                verdict="held" if not missing else ("differs" if seen else "could not tell"),
                evidence=f"missing {missing}; rate headers seen: {seen}"
                if missing
                else ", ".join(wanted),
                blocking=False,
            )
        )

    async def _error_body(self) -> None:
        response = await self._get(
            "get_product", path_values={"productNumber": "probe-no-such-product"}
        )
        body = _body(response)
        parsed = self.dialect.parse_error(response.content)
        readable = isinstance(body, dict) and bool(parsed.code or parsed.message)
        self._find(
            Finding(
                assumption="error body (unknown product)",
                verdict="held" if response.status_code == 404 and readable else "differs",
                evidence=f"{response.status_code} {response.text[:120]!r}",
                blocking=False,
            )
        )

    async def _fields(self, operation: str, model: type[BaseModel]) -> list[dict[str, Any]]:
        response = await self._get(operation, self._page(1))
        items, _ = _items(_body(response))
        records = [i for i in items or [] if isinstance(i, dict)]
        self._check_records(
            model, records, f"{operation} answered {response.status_code} with no records"
        )
        return records

    async def _details(self, orders: list[dict[str, Any]], customers: list[dict[str, Any]]) -> None:
        """The detail models: one order read by number (header, rows, shipments) and one
        customer's prices."""
        # A picked order shows shipments too: ask for one, else take the first listed.
        picked = await self._get(
            "list_orders", {**self._page(1, 1), self.dialect.status_param: "Picked"}
        )
        listed, _ = _items(_body(picked)) if picked.is_success else ([], None)
        candidates = [o for o in listed or [] if isinstance(o, dict)] + orders
        number = next(
            (str(v) for o in candidates for k, v in o.items() if k.lower() == "ordernumber" and v),
            None,
        )
        if number is None:
            for model in (WireOrder, WireOrderHeader, WireOrderRow, WireShipment, WireShipmentRow):
                self._check_records(model, [], "no order in the order list to read")
        else:
            response = await self._get("get_order", path_values={"orderNumber": number})
            body = _body(response)
            order = body if isinstance(body, dict) else {}
            why = f"get_order {number} answered {response.status_code}"
            self._check_records(WireOrder, [order] if order else [], why)
            self._check_records(WireOrderHeader, _dicts(_member(order, "orderHeader")), why)
            rows = _dicts(_member(order, "orderRows"))
            self._check_records(WireOrderRow, rows, f"{why} with no rows")
            shipments = _dicts(_member(order, "shipments"))
            self._check_records(WireShipment, shipments, f"order {number} has no shipment")
            self._check_records(
                WireShipmentRow,
                [r for sh in shipments for r in _dicts(_member(sh, "rows"))],
                f"order {number} has no shipment rows",
            )
        customer = next(
            (
                str(v)
                for c in customers
                for k, v in c.items()
                if k.lower() == "customernumber" and v
            ),
            None,
        )
        if customer is None:
            self._check_records(WirePrice, [], "no customer in the customer list to price for")
            return
        response = await self._get(
            "list_prices", {**self._page(1), self.dialect.customer_number_param: customer}
        )
        items, _ = _items(_body(response))
        self._check_records(
            WirePrice,
            [i for i in items or [] if isinstance(i, dict)],
            f"list_prices for customer {customer} answered {response.status_code} with no prices",
        )

    async def _order_window(self, orders: list[dict[str, Any]]) -> None:
        """The look-up after a lost order answer lists the orders changed since a bound on
        Extend's clock and reads an order absent from a complete answer as not created
        (`order_lookup_window`). Read-only check of what that needs: the order list asked from
        the newest listed order's change date answers that order, and none changed before."""
        assumption = "order list from a change date (the look-up after a lost answer)"
        if not self.dialect.order_lookup_window:
            return
        renames = self.dialect.field_renames.get("WireOrderLight", {})

        def field(record: Mapping[str, Any], name: str) -> Any:
            sent = next((k for k, v in renames.items() if v == name), name)
            return _member(record, sent)

        def stamped(records: list[Any]) -> list[tuple[datetime, str]]:
            out = []
            for record in records:
                if not isinstance(record, dict):
                    continue
                stamp, number = field(record, "changedDate"), field(record, "orderNumber")
                if isinstance(stamp, str) and number is not None:
                    with contextlib.suppress(ValueError):
                        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
                        out.append((self.dialect.aware(when), str(number)))
            return out

        listed = stamped(orders)
        if not listed or self.since is None:
            why = "no order with a change date listed" if not listed else "no working filter"
            self._find(
                Finding(
                    assumption=assumption,
                    verdict="could not tell",
                    evidence=f"{why}; `order_lookup_window = false` asks order by order",
                    blocking=False,
                )
            )
            return
        newest, number = max(listed)
        name, fmt = self.since
        params = self._since(name, fmt, newest)
        response = await self._get("list_orders", params)
        found, _ = _items(_body(response))
        answered = stamped(found or [])
        included = response.is_success and any(n == number for _, n in answered)
        older = sorted({n for when, n in answered if when < newest})
        evidence = (
            f"{name}={params[name]} (order {number}'s change date) answered "
            f"{len(found or [])} orders: order {number} "
            f"{'is' if included else 'is NOT'} among them"
        )
        if older:
            evidence += f"; {len(older)} changed earlier ({', '.join(older[:5])})"
        held = included and not older
        if not held:
            evidence += (
                ": an order created by a lost attempt could be missed and sent twice; "
                "set order_lookup_window = false"
            )
        self._find(
            Finding(
                assumption=assumption,
                verdict="held" if held else "differs",
                evidence=evidence,
                settings={} if held else {"order_lookup_window": False},
            )
        )

    def _check_records(
        self, model: type[BaseModel], records: list[dict[str, Any]], none_why: str
    ) -> None:
        name = model.__name__.removeprefix("Wire")
        if not records:
            self._find(
                Finding(
                    assumption=f"fields of {name}",
                    verdict="could not tell",
                    evidence=none_why,
                    blocking=False,
                )
            )
            return
        renames = self.dialect.field_renames.get(model.__name__, {})
        expected = {(info.alias or n): info.is_required() for n, info in model.model_fields.items()}
        sent: dict[str, str] = {}
        nulls: set[str] = set()
        for record in records:
            for key, value in record.items():
                canonical = renames.get(key.lower(), key)
                sent.setdefault(canonical.lower(), key)
                if value is None:
                    nulls.add(key)
        missing = [f for f in expected if f.lower() not in sent]
        extra = [key for low, key in sent.items() if low not in {f.lower() for f in expected}]
        missing_required = [f for f in missing if expected[f]]
        suggest: dict[str, str] = {}
        if len(missing) == 1 and len(extra) == 1:
            # One field the connector expects is absent and one it does not know is there:
            # most likely the same field under another name (required or not).
            suggest = {f"fields.{name}.{missing[0]}": extra[0]}
        unused = sorted(
            house
            for low_sent, house in renames.items()
            if house.lower() in {k.lower() for r in records for k in r}
            and low_sent not in {k.lower() for r in records for k in r}
        )
        for house in unused:
            # Configured as renamed, but Extend sends the expected name itself.
            suggest[f"fields.{name}.{house}"] = house
        null_required = [f for f in expected if expected[f] and sent.get(f.lower()) in nulls]
        differs = bool(missing_required or null_required or suggest)
        evidence = []
        if missing_required:
            evidence.append(f"required missing: {missing_required}")
        if null_required:
            evidence.append(f"required but null: {null_required}")
        if missing and not missing_required:
            evidence.append(f"optional missing: {missing}")
        if extra:
            evidence.append(f"extra: {extra}")
        if nulls:
            evidence.append(f"null: {sorted(nulls)}")
        if unused:
            evidence.append(f"configured renames not sent (the expected name is): {unused}")
        as_text, no_offset = _formats(model, records, renames)
        if as_text:
            evidence.append(f"numbers sent as strings (read fine): {as_text}")
        if no_offset:
            evidence.append(
                f"dates without a UTC offset (read in extend.dialect.timezone = "
                f"{self.dialect.timezone}): {no_offset}"
            )
        self._find(
            Finding(
                assumption=f"fields of {name}",
                verdict="differs" if differs else "held",
                evidence="; ".join(evidence) or f"{len(expected)} fields as expected",
                settings=suggest,
                blocking=bool(missing_required or null_required),
            )
        )


WRITE_TEST_PREFIX = "PROBE-WRITE-TEST-"


async def write_test(client: ExtendClient, report: ProbeReport) -> None:
    """`probe --write-test` (sandbox companies only): place one minimal order (one unit of a
    product the lists showed, for the configured default customer) and cancel it; nothing else
    is written. Checks what exactly-once relies on: Extend assigns its own order number, the
    look-up by the shop's reference finds the order, and a Registered order can be cancelled."""
    from extend_connector.domain import Order, OrderLine, OrderStatus

    from .errors import ExtendError

    product = next(
        (
            str(v)
            for a in report.samples
            if a["operation"] == "list_products"
            for item in (_items(a["body"])[0] or [])
            if isinstance(item, dict)
            for k, v in item.items()
            if k.lower() == "productnumber" and v
        ),
        None,
    )

    def find(assumption: str, ok: bool, evidence: str) -> None:
        report.findings.append(
            Finding(
                assumption=assumption,
                verdict="held" if ok else "differs",
                evidence=evidence,
                blocking=not ok,
            )
        )

    def unsure(assumption: str, evidence: str) -> None:
        report.findings.append(
            Finding(
                assumption=assumption, verdict="could not tell", evidence=evidence, blocking=False
            )
        )

    if product is None:
        unsure("write test", "no product in the product list to order")
        return
    window = client.dialect.order_lookup_window
    if window:
        # Read Extend's clock off the orders it lists (one list call), as the connector's client
        # does off every order it reads: the bound the look-up window opens from.
        await client.orders_window(datetime.now(UTC) - timedelta(days=30))
    floor = client.created_no_earlier_than()
    ref = f"{WRITE_TEST_PREFIX}{datetime.now(UTC):%Y%m%d%H%M%S}"
    order = Order(
        shop_ref=ref,
        lines=(OrderLine(product_number=product, quantity=Decimal(1)),),
        placed_at=datetime.now(UTC),
        notes="extend-connector probe --write-test: placed and cancelled at once",
    )
    try:
        created = await client.create_order(order)
    except ExtendError as exc:
        find("write test: create an order (POST)", False, f"refused: {exc}")
        return
    find(
        "write test: create an order (POST)",
        created.status == OrderStatus.REGISTERED,
        f"order {created.order_number}, status {created.status.value}",
    )
    find(
        "write test: Extend assigns the order number",
        bool(created.order_number) and created.order_number != ref,
        f"order number {created.order_number!r} for the shop reference {ref!r}",
    )
    found = await client.find_order(ref)
    find(
        "write test: look-up by the shop's reference (before any re-send)",
        found is not None and found.order_number == created.order_number,
        f"found {found.order_number if found else None!r}",
    )
    if window and floor is None:
        unsure(
            "write test: look-up window (orders changed since before the POST)",
            "no order changed in the last 30 days to read Extend's clock from",
        )
    elif window and floor is not None:
        listed = await client.orders_window(floor)
        mine = [o for o in listed.orders if o.order_number == created.order_number]
        ok = bool(mine) and mine[0].changed_at >= floor
        stamp = mine[0].changed_at.isoformat() if mine else None
        find(
            "write test: look-up window (orders changed since before the POST)",
            ok,
            f"listed since {floor.isoformat()}: order {created.order_number} "
            + (f"changed {stamp}" if mine else "is NOT listed")
            + ("" if ok else "; set order_lookup_window = false"),
        )
    try:
        cancelled = await client.cancel_order(created.order_number)
    except ExtendError as exc:
        find(
            "write test: cancel the order",
            False,
            f"refused: {exc}; order {created.order_number} is left Registered (cancel it by hand)",
        )
        return
    after = await client.get_order(created.order_number)
    find(
        "write test: cancel the order",
        after.status == OrderStatus.CANCELLED,
        f"cancel answered {cancelled.status.value}; read back: {after.status.value}",
    )


def _member(record: Mapping[str, Any], name: str) -> Any:
    """`record[name]`, with the key's case as Extend sends it."""
    return next((v for k, v in record.items() if k.lower() == name.lower()), None)


def _dicts(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        return [value]
    return [v for v in value or [] if isinstance(v, dict)]


def _kind(annotation: Any) -> str | None:
    """`number` or `date` for the model fields whose format the probe checks."""
    text = str(annotation)
    if "Decimal" in text:
        return "number"
    if "datetime" in text or "DateOrInstant" in text:
        return "date"
    return None


_OFFSET = re.compile(r"(Z|[+-]\d\d:?\d\d)$")


def _formats(
    model: type[BaseModel], records: list[dict[str, Any]], renames: Mapping[str, str]
) -> tuple[list[str], list[str]]:
    """(number fields sent as strings, date-time fields sent without a UTC offset)."""
    kinds = {
        (info.alias or n).lower(): _kind(info.annotation) for n, info in model.model_fields.items()
    }
    as_text: set[str] = set()
    no_offset: set[str] = set()
    for record in records:
        for key, value in record.items():
            kind = kinds.get(renames.get(key.lower(), key).lower())
            if kind == "number" and isinstance(value, str):
                as_text.add(key)
            elif kind == "date" and isinstance(value, str) and "T" in value:
                if not _OFFSET.search(value):
                    no_offset.add(key)
    return sorted(as_text), sorted(no_offset)


def _token(headers: Mapping[str, str]) -> str:
    value = next(iter(headers.values()), "")
    return value.split(" ", 1)[1] if " " in value else value


async def probe(client: ExtendClient, *, write: bool = False) -> ProbeReport:
    """Run every read-only check (and with `write` the write test); the report says what held,
    what differs and what to set."""
    report = await Prober(client).run()
    if write and not report.blocking:
        await write_test(client, report)
    return report
