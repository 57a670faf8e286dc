"""The one command line: set up, run, sync, inspect and repair the connector."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from extend_connector import __version__
from extend_connector.settings import (
    DEFAULT_CONFIG_FILE,
    ConfigError,
    CustomersScope,
    PricesScope,
    ProductsScope,
    Settings,
    load_settings,
)

EXIT_CONFIG = 3
EXIT_NOT_AVAILABLE = 2


def _settings(ctx: click.Context) -> Settings:
    """Load settings once per invocation; a config mistake stops here with the setting's name."""
    obj: dict[str, Any] = ctx.ensure_object(dict)
    if "settings" not in obj:
        try:
            obj["settings"] = load_settings(obj.get("config_path"))
        except ConfigError as exc:
            click.echo(str(exc), err=True)
            ctx.exit(EXIT_CONFIG)
    settings: Settings = obj["settings"]
    return settings


def not_available(what: str, issue: str) -> NoReturn:
    """Say plainly that a command is not built yet, and fail."""
    click.echo(f"`extend-connector {what}` is not available yet (tracked by: {issue}).", err=True)
    sys.exit(EXIT_NOT_AVAILABLE)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help=f"Config file (default: ./{DEFAULT_CONFIG_FILE} when present). "
    "Environment variables EXTEND_CONNECTOR_<SECTION>__<SETTING> override it.",
)
@click.version_option(__version__, prog_name="extend-connector")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None) -> None:
    """Join a webshop to the Extend Commerce ERP.

    Orders go into Extend exactly once, order progress and stock come back within
    seconds, and the shop reads everything from a local copy that keeps answering
    while Extend is down.

    \b
    First steps:
      extend-connector init       write a commented extend-connector.toml
      extend-connector check      validate it and show what would run
      extend-connector demo       see it all work against the bundled simulator
    """
    ctx.ensure_object(dict)["config_path"] = config_path


@main.command()
@click.option("--path", type=click.Path(path_type=Path, dir_okay=False), default=Path(DEFAULT_CONFIG_FILE),
              show_default=True, help="Where to write the config file.")
@click.option("--products", type=click.Choice([s.value for s in ProductsScope]), default=None,
              help="Sync product master data from Extend?")
@click.option("--customers", type=click.Choice([s.value for s in CustomersScope]), default=None,
              help="Customer master: from Extend, to Extend, or no sync.")
@click.option("--prices", type=click.Choice([s.value for s in PricesScope]), default=None,
              help="Sync per-customer net prices from Extend?")
@click.option("--base-url", default=None, help="Extend API base URL (default: the bundled simulator).")
@click.option("--warehouses", default=None, help="Comma list of the warehouses the shop sells from.")
@click.option("--default-customer", default=None, help="Extend customer number for anonymous shoppers.")
@click.option("--non-interactive", is_flag=True, help="Never ask; use flags and defaults.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(path: Path, products: str | None, customers: str | None, prices: str | None, base_url: str | None,
         warehouses: str | None, default_customer: str | None, non_interactive: bool, force: bool) -> None:
    """Write a commented config file, asking the scope questions of Extend's webshop guide.

    Orders and balances are always integrated (Extend calls them mandatory). You choose
    whether products are synced, which system is master for customers, and whether
    Extend's per-customer prices are pushed to the shop.
    """
    from extend_connector.config_file import render_config

    if path.exists() and not force:
        raise click.ClickException(f"{path} exists; pass --force to overwrite it")
    interactive = not non_interactive and sys.stdin.isatty()

    def ask(value: str | None, question: str, choices: list[str], default: str) -> str:
        if value is not None:
            return value
        if not interactive:
            return default
        return str(click.prompt(question, type=click.Choice(choices), default=default))

    answers = {
        "products": ask(products, "Sync product master data from Extend?", ["sync", "off"], "sync"),
        "customers": ask(customers, "Customer master data", ["from_extend", "to_extend", "off"], "from_extend"),
        "prices": ask(prices, "Push Extend's per-customer prices to the shop?", ["sync", "off"], "sync"),
    }
    text = render_config(
        scope=answers,
        base_url=base_url,
        warehouses=[w.strip() for w in warehouses.split(",")] if warehouses else None,
        default_customer=default_customer,
    )
    path.write_text(text, encoding="utf-8")
    try:
        load_settings(path, env=False)
    except ConfigError as exc:  # pragma: no cover - render_config only writes valid files
        raise click.ClickException(f"the file written is not valid: {exc}") from exc
    click.echo(f"wrote {path}; run `extend-connector --config {path} check` to see what would run")


@main.command()
@click.pass_context
def check(ctx: click.Context) -> None:
    """Validate the configuration and tell what would run."""
    from extend_connector.config_file import describe_plan

    settings = _settings(ctx)
    click.echo(describe_plan(settings))


@main.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Run the connector: webhook inbox, read API, workers and schedules (per engine.role)."""
    _settings(ctx)
    not_available("run", "orders / balances issues")


@main.command()
@click.pass_context
def demo(ctx: click.Context) -> None:
    """Show the whole system working against the bundled simulator."""
    not_available("demo", "demo and benchmarks issue")


@main.command()
def simulator() -> None:
    """Run the bundled Extend Commerce simulator."""
    not_available("simulator", "simulator issue")


@main.command()
@click.argument("data_point", type=click.Choice(["products", "customers", "prices", "balances", "orders"]))
@click.option("--full", is_flag=True, help="Ignore the cursor and read everything.")
@click.option("--dry-run", is_flag=True, help="Fetch and diff, but write nothing and tell the shop nothing.")
@click.pass_context
def sync(ctx: click.Context, data_point: str, full: bool, dry_run: bool) -> None:
    """Run one sync of DATA_POINT now, with progress and a summary."""
    _settings(ctx)
    not_available("sync", "master data issue")


@main.command()
@click.pass_context
def status(ctx: click.Context) -> None:
    """Show freshness of every data point, queue depth and parked failures."""
    _settings(ctx)
    not_available("status", "orders / balances issues")


@main.group()
def failures() -> None:
    """List, inspect and replay work that failed and needs a person."""


@failures.command("list")
@click.pass_context
def failures_list(ctx: click.Context) -> None:
    """List parked failures with their reasons."""
    _settings(ctx)
    not_available("failures list", "orders issue")


@failures.command("show")
@click.argument("failure_id")
@click.pass_context
def failures_show(ctx: click.Context, failure_id: str) -> None:
    """Show one parked failure in full."""
    _settings(ctx)
    not_available("failures show", "orders issue")


@failures.command("retry")
@click.argument("failure_id")
@click.pass_context
def failures_retry(ctx: click.Context, failure_id: str) -> None:
    """Replay a parked failure after its cause was fixed."""
    _settings(ctx)
    not_available("failures retry", "orders issue")


@main.group()
def db() -> None:
    """Database schema: upgrade or show the current revision."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Apply all migrations (also done at every start)."""
    _settings(ctx)
    not_available("db upgrade", "foundation issue")
