"""Install the Vendure shop that ships with the connector (`node/`) into a folder: its files,
then `npm ci` from the committed lock file (exact versions, registry only). Used by
`demo --shop vendure`, the tests and CI (`.ci/run`), which report the wall time.

    python -m extend_connector.webshop.vendure.install DIR
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

NODE_DIR = Path(__file__).parent / "node"
FILES = ("package.json", "package-lock.json", "vendure-config.js", "server.js")
PLUGIN = "extend-plugin"
_STAMP = ".installed-lock-sha256"


MIN_NODE = 20  # Vendure 3.7's dependencies (graphql-ws, file-type, ...) need Node.js 20+


class NodeMissing(RuntimeError):
    """`node` or `npm` is not on PATH, or `node` is older than MIN_NODE."""


def lock_digest() -> str:
    return hashlib.sha256((NODE_DIR / "package-lock.json").read_bytes()).hexdigest()


def missing_tools() -> list[str]:
    return [tool for tool in ("node", "npm") if shutil.which(tool) is None]


def node_major(version: str) -> int | None:
    """`v20.20.2` -> 20 (None for anything else)."""
    head = version.strip().removeprefix("v").split(".", 1)[0]
    return int(head) if head.isdigit() else None


def check_node() -> None:
    """Raise NodeMissing when node/npm are missing or node is too old, saying what to install
    (Debian 12's own `nodejs` package is 18: too old; NodeSource's or the official 20+ build)."""
    missing = missing_tools()
    if missing:
        raise NodeMissing(
            f"{' and '.join(missing)} not found: the Vendure shop needs Node.js {MIN_NODE}+ with "
            "npm (Debian: `apt-get install nodejs npm`, from a repository with Node.js 20+)"
        )
    found = subprocess.run(
        ["node", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    major = node_major(found)
    if major is None or major < MIN_NODE:
        raise NodeMissing(
            f"node {found or '(no version)'} is too old: the Vendure shop needs Node.js "
            f"{MIN_NODE}+ (Debian 12's own nodejs package is 18; install 20+ from NodeSource "
            "or nodejs.org)"
        )


def install(target: Path, *, quiet: bool = True) -> float:
    """Copy the shop into `target` and install its packages when the lock file changed since
    the last install there. Returns the seconds it took (0 when nothing was to do)."""
    check_node()
    started = time.monotonic()
    target.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copyfile(NODE_DIR / name, target / name)
    shutil.copytree(NODE_DIR / PLUGIN, target / PLUGIN, dirs_exist_ok=True)
    stamp = target / _STAMP
    digest = lock_digest()
    if (target / "node_modules").is_dir() and stamp.is_file() and stamp.read_text() == digest:
        return 0.0
    result = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=target,
        capture_output=quiet,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"npm ci in {target} failed ({result.returncode}):\n{result.stderr}")
    stamp.write_text(digest)
    return time.monotonic() - started


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        seconds = install(Path(argv[0]), quiet=False)
    except (NodeMissing, RuntimeError) as exc:
        print(exc, file=sys.stderr)
        return 1
    print(
        f"Vendure shop installed in {argv[0]}: {seconds:.1f} s"
        if seconds
        else f"Vendure shop in {argv[0]} is up to date"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
