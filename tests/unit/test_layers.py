"""The import rules of docs/architecture.md, checked on the source (lazy imports included).

Data flows one way (api -> engine -> flows -> extend/store -> webshop): a package imports only
the packages its row allows, only `engine/` imports DBOS, and nothing below the composition
root (`service.py`, `cli.py`, `demo/`) imports it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import extend_connector

ROOT = Path(extend_connector.__file__).parent

# package -> the extend_connector packages (or modules) it may import besides itself
ALLOWED: dict[str, set[str]] = {
    "domain": set(),
    "redact": set(),
    "logs": {"redact"},
    "metrics": set(),
    "notify": {"settings"},
    "settings": {"redact"},
    "extend": {"domain", "settings", "redact", "metrics"},
    "webshop": {"domain", "settings", "metrics"},
    "store": {"domain", "settings"},
    "engine": {"settings", "store.database"},
    "flows": {
        "domain",
        "extend",
        "store",
        "webshop",
        "engine",
        "settings",
        "redact",
        "metrics",
        "notify",
    },
    "api": {
        "flows",
        "store",
        "engine",
        "extend.webhooks",
        "settings",
        "domain",
        "redact",
        "metrics",
        "__version__",
    },
    "simulator": set(),
}
DBOS_ONLY_IN = "engine"


def _package(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return parts[0]


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every `extend_connector...` and `dbos...` name imported anywhere in the module."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "extend_connector":
                found += [(node.lineno, f"extend_connector.{alias.name}") for alias in node.names]
            else:
                found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def _allowed(package: str, imported: str) -> bool:
    target = imported.removeprefix("extend_connector.")
    if target == package or target.startswith(f"{package}."):
        return True
    return any(target == rule or target.startswith(f"{rule}.") for rule in ALLOWED[package])


def test_every_package_imports_only_what_its_layer_allows() -> None:
    problems = []
    for path in sorted(ROOT.rglob("*.py")):
        package = _package(path)
        if package not in ALLOWED:
            # service.py, cli.py, demo/, config_file.py: the composition root may import anything
            continue
        for line, name in _imports(path):
            if name.startswith("extend_connector") and not _allowed(package, name):
                problems.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert problems == []


def test_only_the_engine_imports_dbos() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in sorted(ROOT.rglob("*.py"))
        if _package(path) != DBOS_ONLY_IN
        for line, name in _imports(path)
        if name == "dbos" or name.startswith("dbos.")
    ]
    assert offenders == []


def test_no_module_imports_parts_by_name() -> None:
    """Explicit imports only: a part looked up by name could be missing without an ImportError."""
    offenders = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in sorted(ROOT.rglob("*.py"))
        for line, name in _imports(path)
        if name == "importlib" or name.startswith("importlib.")
    ]
    assert offenders == []
