"""`extend-connector probe`: read-only checks of the dialect's assumptions against a live Extend.

Each check is one `Finding` (assumption, verdict held / differs / could not tell, evidence,
the dialect settings that would make it hold, whether a difference blocks the connector). The
reads go through `ExtendClient.probe_get`, so they stay within the rate budget. The raw answers
seen are kept (redacted) so they can be saved as a sample file.

Covered now: authentication (and which header/scheme works), the list envelope, paging (page 2
differs from page 1, the page size is honoured), the change-date filter (accepted, inclusive at
the exact instant of a record), the product-number and warehouse filters, rate-limit
headers, the error body of an unknown product, and
the fields of the list models (missing, renamed, extra, null) against the wire models.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import httpx2
from pydantic import BaseModel

from extend_connector.redact import redact_value

from .client import ExtendClient
from .wire import WireAvailability, WireCustomer, WireOrderLight, WireProduct

Verdict = Literal["held", "differs", "could not tell"]

AUTH_CANDIDATES: tuple[tuple[str, str], ...] = (
    ("Authorization", "Bearer"),
    ("Authorization", ""),
    ("X-Api-Key", ""),
    ("Api-Key", ""),
)
"""(header, scheme) tried when the configured credential header is refused."""

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
            self.dialect.page_param: str(number),
            self.dialect.page_size_param: str(size or self.page_size),
        }

    async def run(self) -> ProbeReport:
        if not await self._auth():
            return self.report
        first = await self._paging()
        await self._changed_since(first)
        await self._filters(first)
        await self._rate_limit_headers()
        await self._error_body()
        for operation, model in LIST_MODELS:
            await self._fields(operation, model)
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
            self._find(
                Finding(
                    assumption="page-size parameter",
                    verdict="differs",
                    evidence=f"asked {self.dialect.page_size_param}={self.page_size}, got "
                    f"{len(items)} records: the parameter is not honoured (set "
                    "page_size_param to Extend's name)",
                )
            )
        else:
            self._find(
                Finding(
                    assumption="page-size parameter",
                    verdict="held",
                    evidence=f"{self.dialect.page_size_param}={self.page_size} -> {len(items)}",
                )
            )
        two = await self._get("list_products", self._page(2))
        second, _ = _items(_body(two))
        if len(items) < self.page_size or second is None:
            verdict: Verdict = "could not tell"
            evidence = f"page 1 had {len(items)} records; too few to see a second page"
        elif second and second != items:
            verdict, evidence = "held", f"{self.dialect.page_param}=2 answered other records"
        else:
            verdict = "differs"
            evidence = f"{self.dialect.page_param}=2 answered the same records as page 1"
        self._find(Finding(assumption="page parameter", verdict=verdict, evidence=evidence))
        return items

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
        stamp, record = stamps[-1]
        instant = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        at = self.dialect.format_datetime(self.dialect.aware(instant))
        response = await self._get(
            "list_products",
            {**self._page(1, 500), self.dialect.changed_since_param: at},
        )
        found, _ = _items(_body(response))
        if not response.is_success or found is None:
            self._find(
                Finding(
                    assumption="change-date filter",
                    verdict="differs",
                    evidence=f"{self.dialect.changed_since_param}={at} answered "
                    f"{response.status_code}",
                )
            )
            return
        held = record in found and len(found) < 500
        self._find(
            Finding(
                assumption="change-date filter (accepted, inclusive at the instant)",
                verdict="held" if held else "differs",
                evidence=f"{self.dialect.changed_since_param}={at}: the record changed at that "
                f"instant {'is' if record in found else 'is NOT'} in the {len(found)} answered",
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

    async def _fields(self, operation: str, model: type[BaseModel]) -> None:
        response = await self._get(operation, self._page(1))
        items, _ = _items(_body(response))
        name = model.__name__.removeprefix("Wire")
        records = [i for i in items or [] if isinstance(i, dict)]
        if not records:
            self._find(
                Finding(
                    assumption=f"fields of {name}",
                    verdict="could not tell",
                    evidence=f"{operation} answered {response.status_code} with no records",
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
        if len(missing_required) == 1 and len(extra) == 1:
            suggest = {f"fields.{name}.{missing_required[0]}": extra[0]}
        null_required = [f for f in expected if expected[f] and sent.get(f.lower()) in nulls]
        differs = bool(missing_required or null_required)
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
        self._find(
            Finding(
                assumption=f"fields of {name}",
                verdict="differs" if differs else "held",
                evidence="; ".join(evidence) or f"{len(expected)} fields as expected",
                settings=suggest,
            )
        )


def _token(headers: Mapping[str, str]) -> str:
    value = next(iter(headers.values()), "")
    return value.split(" ", 1)[1] if " " in value else value


async def probe(client: ExtendClient) -> ProbeReport:
    """Run every read-only check; the report says what held, what differs and what to set."""
    return await Prober(client).run()
