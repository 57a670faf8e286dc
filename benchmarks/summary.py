"""One table with every row of issue #13's table, read from benchmarks/results/*.json.

Columns: figure, measured, same-run baseline, ratio, target, met?. A row whose results file is
missing, was not written by this run (`--since`), or says it was skipped reads "not run" and why.
Writes benchmarks/results/summary.json too.

Run: .venv/bin/python benchmarks/summary.py [--since EPOCH_SECONDS]
(benchmarks/run_all passes its own start, so results left from an earlier run are not shown as
this run's.)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, write_results
from rich.console import Console
from rich.table import Table


@dataclass
class Row:
    figure: str
    measured: str
    baseline: str
    ratio: str
    target: str
    met: str

    def cells(self) -> list[str]:
        return [self.figure, self.measured, self.baseline, self.ratio, self.target, self.met]


class Results:
    """The results files, each only when written at or after `since`."""

    def __init__(self, since: float | None) -> None:
        self.since = since

    def load(self, scenario: str) -> tuple[dict[str, Any] | None, str]:
        path = RESULTS / f"{scenario}.json"
        if not path.exists():
            return None, f"no results/{scenario}.json"
        if self.since is not None and path.stat().st_mtime < self.since:
            return None, f"{scenario}.py did not write results in this run (failed or not run)"
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("skipped"):
            return None, f"{scenario}.py skipped: {data['skipped']}"
        return data, ""


def s(value: float | None, unit: str = " s", digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def per_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}/s"


def frac(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{a / b:.2f}"


def yes(flag: bool | None) -> str:
    return "-" if flag is None else ("yes" if flag else "NO")


def not_run(figure: str, target: str, why: str) -> Row:
    return Row(figure, f"not run: {why}", "", "", target, "-")


def ingest_rows(res: Results) -> list[Row]:
    data, why = res.load("ingest")
    t_share, t_p99, t_pg = ">= 0.40 of the bare endpoint", "p99 < 50 ms", ">= SQLite's figure"
    if data is None:
        return [
            not_run("webhook ingest, SQLite, one process", t_share, why),
            not_run("webhook ack latency at 200 deliveries/s", t_p99, why),
            not_run("ingest on PostgreSQL", t_pg, why),
        ]
    by = {r["backend"]: r for r in data["results"]}
    lite = by.get("sqlite")
    rows = []
    if lite is None:
        rows.append(not_run("webhook ingest, SQLite, one process", t_share, "no SQLite run"))
        rows.append(not_run("webhook ack latency at 200 deliveries/s", t_p99, "no SQLite run"))
    else:
        share = lite["share_of_ceiling"]
        rows.append(
            Row(
                "webhook ingest, SQLite, one process",
                per_s(lite["ingest"]["per_second"]),
                f"bare endpoint {per_s(lite['ceiling']['per_second'])}",
                f"{share:.2f}",
                t_share,
                yes(share >= 0.40),
            )
        )
        rate = data["settings"]["rate"]
        fixed = lite["fixed"]
        rows.append(
            Row(
                f"webhook ack latency at {rate:.0f} deliveries/s",
                f"p99 {s(fixed['p99'] and fixed['p99'] * 1000, ' ms', 0)}"
                + (f", {fixed['errors']} errors" if fixed["errors"] else ""),
                f"bare endpoint p99 {s(lite['fixed_baseline']['p99'] * 1000, ' ms', 0)}",
                frac(fixed["p99"], lite["fixed_baseline"]["p99"]),
                t_p99,
                yes(fixed["p99"] is not None and fixed["p99"] < 0.050 and not fixed["errors"]),
            )
        )
    pg = by.get("postgresql")
    if pg is None:
        rows.append(
            not_run(
                "ingest on PostgreSQL", t_pg, "no PostgreSQL (EXTEND_CONNECTOR_TEST_POSTGRES_URL)"
            )
        )
    else:
        lite_rate = lite["ingest"]["per_second"] if lite else None
        # The deployment PostgreSQL is for: a `web` process (HTTP and the inbox) with workers
        # beside it; shown with the one-process figure, which the row's verdict is on.
        web = by.get("postgresql-web")
        split = (
            ""
            if web is None
            else f"; web + worker {per_s(web['ingest']['per_second'])} "
            f"({frac(web['ingest']['per_second'], lite_rate)})"
        )
        for layout in sorted(k for k in by if k.startswith("postgresql-web") and k[-1].isdigit()):
            many = by[layout]
            split += (
                f"; {many['web_processes']} web processes + worker "
                f"{per_s(many['ingest']['per_second'])} "
                f"({frac(many['ingest']['per_second'], lite_rate)})"
            )
        rows.append(
            Row(
                "ingest on PostgreSQL",
                f"{per_s(pg['ingest']['per_second'])} one process{split}",
                f"SQLite {per_s(lite_rate)}",
                frac(pg["ingest"]["per_second"], lite_rate),
                t_pg,
                yes(lite_rate is not None and pg["ingest"]["per_second"] >= lite_rate),
            )
        )
    return rows


def orders_rows(res: Results) -> list[Row]:
    data, why = res.load("orders")
    t_clean = ">= 1.0 of the loop and >= 50/s"
    t_faults = "all in Extend within the window, 0 duplicates"
    if data is None:
        return [
            not_run("orders into Extend, clean", t_clean, why),
            not_run("orders, 20% technical faults", t_faults, why),
        ]
    runs = {r["run"]: r for r in data["runs"]}
    clean, faults = runs.get("clean"), runs.get("faults20")
    loop = next((r for r in data["runs"] if r["run"].startswith("baseline")), None)
    loop_rate = loop["per_second"] if loop else None
    rows = []
    if clean is None:
        rows.append(not_run("orders into Extend, clean", t_clean, "no clean run"))
    else:
        rate = clean["per_second"]
        rows.append(
            Row(
                "orders into Extend, clean",
                f"{per_s(rate)} ({clean['in_extend']}/{clean['orders']}, "
                f"{clean['duplicates']} dup)",
                f"direct synchronous POST loop {per_s(loop_rate)}",
                frac(rate, loop_rate),
                t_clean,
                yes(
                    rate is not None
                    and loop_rate is not None
                    and rate >= loop_rate
                    and rate >= 50
                    and clean["in_extend"] == clean["orders"]
                ),
            )
        )
    if faults is None:
        rows.append(not_run("orders, 20% technical faults", t_faults, "no faults run"))
    else:
        rows.append(
            Row(
                "orders, 20% technical faults",
                f"{faults['in_extend']} of {faults['orders']} in Extend within the window, "
                f"{faults['duplicates']} dup",
                "",
                frac(faults["in_extend"], faults["orders"]),
                t_faults,
                yes(faults["in_extend"] == faults["orders"] and faults["duplicates"] == 0),
            )
        )
    return rows


def balances_rows(res: Results) -> list[Row]:
    data, why = res.load("balances")
    figures = [
        ("stock freshness (local), trickle", "p99 <= 1.5 s"),
        ("stock freshness, burst", "p99 <= 3 s"),
        ("stock reaching the shop (its webhook), trickle / burst", "p99 <= 2 s / <= 4 s"),
        (
            "ProductAvailability calls per 1,000 notifications",
            "<= 20 in bursts; trickle <= 1 per debounce window",
        ),
    ]
    if data is None:
        return [not_run(f, t, why) for f, t in figures]
    phases = {p["phase"]: p for p in data["phases"]}
    trickle, burst = phases["trickle"], phases["burst"]
    fpn = data["baselines"]["fetch_per_notification"]
    settings = data.get("settings", {})
    rate = settings.get("trickle_rate", 5.0)
    seconds = settings.get("trickle_seconds", 20.0)
    rows = [
        Row(
            f"stock freshness (local), trickle {rate:g}/s",
            f"p99 {s(trickle['local_p99'])} ({trickle['confirmed']}/{trickle['changes']})",
            f"fetch per notification p99 {s(fpn['trickle_p99'], ' s', 1)} (analytical)",
            frac(trickle["local_p99"], fpn["trickle_p99"]),
            figures[0][1],
            yes(
                trickle["local_p99"] is not None
                and trickle["local_p99"] <= 1.5
                and trickle["confirmed"] == trickle["changes"]
            ),
        ),
        Row(
            f"stock freshness, burst {burst['changes']:,}/s",
            f"p99 {s(burst['local_p99'])} ({burst['confirmed']}/{burst['changes']})",
            f"fetch per notification p99 {s(fpn['burst_p99'], ' s', 0)} (analytical)",
            frac(burst["local_p99"], fpn["burst_p99"]),
            figures[1][1],
            yes(
                burst["local_p99"] is not None
                and burst["local_p99"] <= 3.0
                and burst["confirmed"] == burst["changes"]
            ),
        ),
        Row(
            figures[2][0],
            f"p99 {s(trickle['shop_p99'])} / {s(burst['shop_p99'])} (told "
            f"{trickle['shop_told']}/{trickle['changes']}, "
            f"{burst['shop_told']}/{burst['changes']})",
            "",
            "",
            figures[2][1],
            yes(
                trickle["shop_p99"] is not None
                and burst["shop_p99"] is not None
                and trickle["shop_p99"] <= 2.0
                and burst["shop_p99"] <= 4.0
                and trickle["shop_told"] == trickle["changes"]
                and burst["shop_told"] == burst["changes"]
            ),
        ),
    ]
    debounce = debounce_seconds()
    windows = seconds / debounce if debounce else None
    burst_calls = burst["calls_per_1000_notifications"]
    rows.append(
        Row(
            figures[3][0],
            f"burst {s(burst_calls, '', 1)}; trickle {trickle['availability_calls']} calls in "
            f"{seconds:g} s ({s(windows, '', 0)} debounce windows)",
            f"fetch per notification {fpn['calls_per_1000_notifications']:.0f}",
            frac(burst_calls, fpn["calls_per_1000_notifications"]),
            figures[3][1],
            yes(
                burst_calls is not None
                and burst_calls <= 20
                and windows is not None
                and trickle["availability_calls"] <= windows
            ),
        )
    )
    return rows


def debounce_seconds() -> float | None:
    """The default debounce window (`sync.balance_debounce_seconds`), as main defines it."""
    try:
        from extend_connector.settings import SyncSettings

        return float(SyncSettings.model_fields["balance_debounce_seconds"].default)
    except Exception:  # informative only
        return None


def burst_10k_row(res: Results) -> Row:
    figure = "10,000 notifications in 10 s: all equal after the burst"
    target = "<= 5 s after it ends"
    data, why = res.load("balances")
    flood = None if data is None else {p["phase"]: p for p in data["phases"]}.get("flood")
    if data is None or flood is None:
        return not_run(figure, target, why or "balances.py ran without its flood phase")
    after = flood["all_equal_after_end"]
    fpn = data["baselines"].get("flood_fetch_per_notification_after_end")
    poll = data["baselines"].get("flood_poll_every_60s_after_end")
    return Row(
        f"{flood['notifications']:,} notifications in {flood['fired_seconds']:.1f} s "
        f"({flood['products']:,} products): all equal after the end",
        s(after) if after is not None else f"not all equal ({flood['confirmed']})",
        f"fetch per notification {s(fpn, ' s', 0)}, poll every 60 s {s(poll, ' s', 0)} "
        "(analytical)",
        frac(after, poll),
        target,
        yes(after is not None and after <= 5.0),
    )


def outage_row(res: Results) -> Row:
    data, why = res.load("outage_freshness")
    target = "fresh within 3 s of Extend answering"
    figure = "freshness after an Extend outage ends"
    if data is None:
        return not_run(figure, target, why)
    worst = data["worst_seconds_to_fresh"]
    base = data["baseline_seconds_median"]
    return Row(
        figure,
        f"worst {s(worst)}, median {s(data['median_seconds_to_fresh'])} "
        f"({len(data['cycles'])} outages)",
        f"next backoff expiry without early wake, median {s(base)} "
        f"(policy cap {s(data['policy_cap_seconds'], ' s', 0)})",
        frac(data["median_seconds_to_fresh"], base),
        "<= 3 s",
        yes(worst is not None and worst <= data["target_seconds"]),
    )


def scale_rows(res: Results) -> list[Row]:
    data, why = res.load("scale_out")
    target = ">= 1.7x one process (same database kind, same run)"
    names = ("scale-out on PostgreSQL, web + 2 workers: orders", "scale-out: webhook ingest")
    if data is None:
        return [not_run(n, target, why) for n in names]
    single, fleet = data["runs"]
    o1, o2 = single["orders"], fleet["orders"]
    i1, i2 = single["ingest"]["per_second"], fleet["ingest"]["per_second"]
    once = o1["exactly_once"] and o2["exactly_once"]
    return [
        Row(
            names[0],
            f"{per_s(o2['per_second'])} ({o2['orders']} orders, "
            f"{'exactly once' if once else 'NOT exactly once'})",
            f"one process {per_s(o1['per_second'])}",
            s(data["orders_ratio"], "", 2),
            target,
            yes(data["orders_ratio"] is not None and data["orders_ratio"] >= 1.7 and once),
        ),
        Row(
            names[1],
            per_s(i2),
            f"one process {per_s(i1)}",
            s(data["ingest_ratio"], "", 2),
            target,
            yes(data["ingest_ratio"] >= 1.7),
        ),
    ]


def catalogue_row(res: Results) -> Row:
    data, why = res.load("catalogue_limits")
    target = ">= 0.90 of the floor (calls needed / limit)"
    figure = "catalogue sync against binding rate limits"
    if data is None:
        return not_run(figure, target, why)
    return Row(
        f"{figure} ({data['settings']['products']} products)",
        f"{s(data['measured_seconds'], ' s', 1)} (efficiency floor / measured "
        f"{s(data['efficiency'], '', 2)})",
        f"floor {s(data['floor_seconds'], ' s', 1)}; paced client "
        f"{s(data['paced_baseline_seconds'], ' s', 1)}",
        s(data["efficiency"], "", 2),
        target,
        yes(data["efficiency"] is not None and data["efficiency"] >= 0.9),
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--since",
        type=float,
        default=None,
        help="Only results files written at or after this instant (seconds since the epoch).",
    )
    args = parser.parse_args()
    res = Results(args.since)
    builders: list[Callable[[Results], list[Row]]] = [
        ingest_rows,
        orders_rows,
        lambda r: balances_rows(r)[:2],
        lambda r: [burst_10k_row(r)],
        lambda r: balances_rows(r)[2:3],
        lambda r: [outage_row(r)],
        lambda r: balances_rows(r)[3:],
        scale_rows,
        lambda r: [catalogue_row(r)],
    ]
    rows = [row for build in builders for row in build(res)]
    table = Table(title="Issue #13: every figure, this run", show_lines=True)
    for header in ("figure", "measured", "same-run baseline", "ratio", "target", "met?"):
        table.add_column(header, justify="right" if header == "ratio" else "left")
    for r in rows:
        table.add_row(*r.cells())
    Console(width=200).print(table)
    print(
        "ratio: measured / baseline, except the catalogue row (floor / measured) and scale-out "
        "(web + 2 workers / one process), as each target reads"
    )
    met = sum(r.met == "yes" for r in rows)
    missed = sum(r.met == "NO" for r in rows)
    unrun = sum(r.met == "-" for r in rows)
    print(f"{met} met, {missed} not met, {unrun} not run or without a verdict, of {len(rows)}")
    write_results("summary", {"since": args.since, "rows": [r.__dict__ for r in rows]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
