"""The dialects the acceptance scenarios run in: the house contract and a second one
(tests/unit/data/dialect2.toml: X-Api-Key bare key, pageNo/take, header envelope,
modifiedSince in UTC, renamed Availability/OrderLight/Product fields) with null empty lists.

One file configures both sides, as a deployment would: the simulator reads it with
`--dialect-file`, the connector as ./extend-connector.toml in its working directory.
"""

from __future__ import annotations

import shutil
from pathlib import Path

DIALECT2 = Path(__file__).parents[1] / "unit" / "data" / "dialect2.toml"
DIALECTS = ("house", "dialect2")


def simulator_args(dialect: str) -> tuple[str, ...]:
    """`extend-connector simulator` options that make it speak `dialect`."""
    if dialect == "house":
        return ()
    return ("--dialect-file", str(DIALECT2), "--null-empty-lists")


def configure_connector(dialect: str, cwd: Path) -> None:
    """Make a connector started in `cwd` speak `dialect` (its default config file there)."""
    target = cwd / "extend-connector.toml"
    if dialect == "house":
        target.unlink(missing_ok=True)
    else:
        shutil.copyfile(DIALECT2, target)
