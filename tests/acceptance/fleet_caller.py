"""One connector process that hammers Extend with `get_product` (acceptance test of the shared
limiter).

    python tests/acceptance/fleet_caller.py --name a --dir DIR --products P1,P2 --seconds 4 --tasks
    8

Settings come from the environment (EXTEND_CONNECTOR_*), and the process is put together the way
every connector process is (`service.Connector`), so the Extend client it gets is the one the
flows get, with the shared rate limit attached or not per `extend.shared_rate_limit`. It writes
DIR/ready-NAME once built, starts calling when DIR/go appears, calls for `--seconds` with
`--tasks` concurrent callers, prints one JSON line of figures and exits by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from extend_connector.extend import ExtendError
from extend_connector.service import Connector
from extend_connector.settings import load_settings

GO_TIMEOUT_SECONDS = 60.0


async def hammer(
    connector: Connector, products: list[str], seconds: float, tasks: int
) -> dict[str, Any]:
    client = connector.context.extend()
    ok = 0
    errors: dict[str, int] = {}
    deadline = time.monotonic() + seconds

    async def caller(offset: int) -> None:
        nonlocal ok
        i = offset
        while time.monotonic() < deadline:
            try:
                await client.get_product(products[i % len(products)])
                ok += 1
            except ExtendError as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            i += tasks

    try:
        await asyncio.gather(*(caller(n) for n in range(tasks)))
        group = client.stats().groups.get("standard")
        return {
            "ok": ok,
            "errors": errors,
            "throttled_answers": group.throttled if group else 0,
            "fleet_attached": client.budget.fleet is not None,
            "fleet_failures": client.budget.fleet_failures,
        }
    finally:
        await connector.context.aclose()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--products", required=True)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--tasks", type=int, default=8)
    args = parser.parse_args()
    connector = Connector(load_settings(None))
    try:
        (args.dir / f"ready-{args.name}").write_text("ready")
        deadline = time.monotonic() + GO_TIMEOUT_SECONDS
        while not (args.dir / "go").exists():
            if time.monotonic() > deadline:
                print(json.dumps({"error": "never told to go"}))
                return 2
            time.sleep(0.01)
        figures = asyncio.run(hammer(connector, args.products.split(","), args.seconds, args.tasks))
    finally:
        connector.close()
    print(json.dumps({"name": args.name, **figures}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
