"""The one command line: set up, run, sync, inspect and repair the connector."""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

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
# What `sync` can run: the keys of `service.SWEEPS` (not imported here: it pulls in every flow).
SYNC_DATA_POINTS = ["products", "customers", "prices", "balances", "orders"]


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
@click.option(
    "--path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path(DEFAULT_CONFIG_FILE),
    show_default=True,
    help="Where to write the config file.",
)
@click.option(
    "--products",
    type=click.Choice([s.value for s in ProductsScope]),
    default=None,
    help="Sync product master data from Extend?",
)
@click.option(
    "--customers",
    type=click.Choice([s.value for s in CustomersScope]),
    default=None,
    help="Customer master: from Extend, to Extend, or no sync.",
)
@click.option(
    "--prices",
    type=click.Choice([s.value for s in PricesScope]),
    default=None,
    help="Sync per-customer net prices from Extend?",
)
@click.option(
    "--base-url", default=None, help="Extend API base URL (default: the bundled simulator)."
)
@click.option(
    "--warehouses", default=None, help="Comma list of the warehouses the shop sells from."
)
@click.option(
    "--default-customer", default=None, help="Extend customer number for anonymous shoppers."
)
@click.option("--non-interactive", is_flag=True, help="Never ask; use flags and defaults.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(
    path: Path,
    products: str | None,
    customers: str | None,
    prices: str | None,
    base_url: str | None,
    warehouses: str | None,
    default_customer: str | None,
    non_interactive: bool,
    force: bool,
) -> None:
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
        "customers": ask(
            customers, "Customer master data", ["from_extend", "to_extend", "off"], "from_extend"
        ),
        "prices": ask(
            prices, "Push Extend's per-customer prices to the shop?", ["sync", "off"], "sync"
        ),
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
    except ConfigError as exc:
        if (
            not exc.unsafe_only
        ):  # pragma: no cover - render_config writes valid files but for secrets
            raise click.ClickException(f"the file written is not valid: {exc}") from exc
        # A real Extend URL makes the public default secrets unsafe: say what to fill in.
        click.echo(
            f"wrote {path}; set these before `run` (in the file or the environment):\n  "
            + "\n  ".join(exc.problems)
        )
        return
    click.echo(f"wrote {path}; run `extend-connector --config {path} check` to see what would run")


@main.command()
@click.option(
    "--online",
    is_flag=True,
    help="Also contact everything: the database (read only), Extend (one read per rate-limit "
    "group) and the shop (a signed ping, or Vendure's login); exit 1 when something fails.",
)
@click.pass_context
def check(ctx: click.Context, online: bool) -> None:
    """Validate the configuration and tell what would run (secrets are never shown).

    Refuses (exit 3, naming the setting) empty secrets, and public default secrets when
    extend.base_url, server.host or webshop.webhook_url is not loopback; every command does.
    With `webshop.adapter = "vendure"` it also logs in to Vendure's Admin API and looks up the
    stock locations it is told to use (exit 1, naming the setting, when that fails).
    `--online` contacts everything (docs/extend-dialect.md, "Going live"): one line per
    finding, naming the setting to change.
    """
    from extend_connector.config_file import describe_plan

    settings = _settings(ctx)
    click.echo(describe_plan(settings))
    if online:
        import asyncio

        from extend_connector.online_check import check_online

        findings = asyncio.run(check_online(settings))
        click.echo("")
        for finding in findings:
            click.echo(finding.line())
        if not all(f.ok for f in findings):
            sys.exit(1)
        return
    if settings.webshop.adapter == "vendure":
        problems = _check_vendure(settings)
        for problem in problems:
            click.echo(f"vendure: {problem}", err=True)
        if problems:
            sys.exit(1)
        click.echo(
            f"vendure: logged in to {settings.webshop.vendure.admin_api_url} as "
            f"{settings.webshop.vendure.username}; stock locations found"
        )


def _check_vendure(settings: Settings) -> list[str]:
    import asyncio

    from extend_connector.webshop import vendure

    async def go() -> list[str]:
        shop = vendure.from_settings(settings)
        try:
            return await shop.check()
        finally:
            await shop.aclose()

    return asyncio.run(go())


@main.command()
@click.option(
    "--toml-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("extend-dialect.suggested.toml"),
    show_default=True,
    help="Where to write the [extend.dialect] settings that would make every check hold.",
)
@click.option(
    "--sample-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("extend-probe-sample.json"),
    show_default=True,
    help="Where to save the raw answers seen (credentials and personal data redacted).",
)
@click.option(
    "--write-test",
    is_flag=True,
    help="SANDBOX COMPANIES ONLY: also place one minimal order (one unit, default customer) "
    "and cancel it at once, to check order creation, Extend's order number, the look-up by "
    "the shop's reference, the look-up window by change date, and cancellation. Nothing else "
    "is written.",
)
@click.pass_context
def probe(ctx: click.Context, toml_out: Path, sample_out: Path, write_test: bool) -> None:
    """Check the dialect's assumptions against the configured Extend (read-only by default).

    Authentication (which header/scheme works), list envelope, paging, the change-date,
    product-number and warehouse filters, rate-limit headers, the error body of an unknown
    product, the fields of each list and detail model, and the order list from a change date
    (what the gathered order look-up relies on). Prints a table (held / differs /
    could not tell, with evidence), writes the dialect settings that would make it hold, and
    saves the answers as a sample file; exit 1 when something blocking differs. Reads stay
    within the configured rate limits. `--write-test` (sandbox only) runs after the reads
    hold.
    """
    import asyncio

    from extend_connector.extend import ExtendClient
    from extend_connector.extend.probe import probe as run_probe

    settings = _settings(ctx)

    async def go() -> Any:
        async with ExtendClient.from_settings(settings) as client:
            return await run_probe(client, write=write_test)

    report = asyncio.run(go())
    click.echo(report.table())
    sample_out.write_text(report.sample_json(), encoding="utf-8")
    snippet = report.toml()
    if snippet:
        toml_out.write_text(snippet, encoding="utf-8")
        click.echo(f"\nsuggested settings (written to {toml_out}):\n{snippet}")
    click.echo(f"raw answers saved to {sample_out}")
    if report.blocking:
        ctx.exit(1)


@main.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Run the connector: webhook inbox, read API, workers and schedules (per engine.role).

    \b
    engine.role = all     HTTP and jobs in this process (default; SQLite or PostgreSQL)
    engine.role = web     HTTP only: webhook inbox and read API enqueue work (PostgreSQL);
                          server.processes = N answers the port from N processes
    engine.role = worker  jobs only (PostgreSQL); run as many as you need, each with its own
                          stable engine.executor_id (and server.worker_port for its
                          /metrics, /healthz and /readyz)
    Logs: JSON lines on stdout (log.format, log.level); see docs/operations.md.
    Stops cleanly on Ctrl-C / SIGTERM; work in flight resumes at the next start.
    """
    from extend_connector.service import Connector, configure_logging

    settings = _settings(ctx)
    configure_logging(settings.log.level, fmt=settings.log.format)
    if settings.engine.role == "web" and settings.server.processes > 1:
        from extend_connector.web_processes import serve_processes

        ctx.exit(serve_processes(settings))
    Connector(settings).serve()


@main.command(context_settings={"show_default": True})
@click.option(
    "--duration",
    default=60.0,
    type=float,
    help="Seconds the shop places orders before the system settles.",
)
@click.option(
    "--seed", default=1, type=int, help="Seed of the simulator's data and of the shop's script."
)
@click.option("--products", default=200, type=int, help="Products in the simulated Extend.")
@click.option(
    "--orders-per-second", default=2.0, type=float, help="Orders the shop places per second."
)
@click.option(
    "--chaos",
    is_flag=True,
    help="Switch faults on in phases: 5xx storm, Extend down, dropped/duplicated hooks.",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Keep the SQLite file and the connector's log here (default: a temporary directory).",
)
@click.option(
    "--plain",
    is_flag=True,
    help="Plain periodic lines instead of the live view (automatic without a terminal).",
)
@click.option(
    "--rate-heavy",
    default="60/60",
    help="Extend's limit on list calls (the heavy group), LIMIT/SECONDS: lower it to watch the "
    "rate budget pace the connector.",
)
@click.option(
    "--shop",
    type=click.Choice(["embedded", "vendure"]),
    default="embedded",
    help="The shop: the embedded scripted one, or a real Vendure (needs node and npm; "
    "installed on first use, docs/webshops/vendure.md).",
)
def demo(
    duration: float,
    seed: int,
    products: int,
    orders_per_second: float,
    chaos: bool,
    data_dir: Path | None,
    plain: bool,
    rate_heavy: str,
    shop: str,
) -> None:
    """Show the whole system working against the bundled simulator, then check it.

    Embedded defaults only: a seeded simulator, the connector on SQLite with in-process
    workers, a scripted shop on /v1 and a driver playing Extend's warehouse. At the end the
    demo settles and compares every order and balance with the simulator: exit 0 only if
    every order is in Extend exactly once and every balance agrees. Ctrl-C ends the run early.

    `--shop vendure`: the same against a real Vendure server (installed with npm into the data
    directory on first use): the catalogue, prices and stock from Extend into Vendure, guests
    ordering through Vendure's Shop API, fulfilments with tracking back into Vendure; exit 0
    only if every Vendure order is in Extend exactly once, every picked one is Shipped in
    Vendure and Vendure's stock equals Extend's. Exit 2 when node or npm is missing.
    """
    from extend_connector.demo import DemoOptions, run_demo

    if shop == "vendure":
        if chaos:
            raise click.UsageError("--chaos runs with the embedded shop only")
        from extend_connector.demo.vendure import run_vendure_demo

        sys.exit(
            run_vendure_demo(
                duration=duration,
                seed=seed,
                products=products,
                orders_per_second=orders_per_second,
                data_dir=data_dir,
                settle_seconds=120.0,
                say=lambda text: print(text, flush=True),
            )
        )

    try:
        options = DemoOptions(
            duration=duration,
            seed=seed,
            products=products,
            orders_per_second=orders_per_second,
            chaos=chaos,
            data_dir=data_dir,
            live=False if plain else None,
            heavy_limit=_rate(rate_heavy),
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    sys.exit(run_demo(options))


def _rate(text: str) -> tuple[int, float]:
    """`LIMIT/SECONDS`, e.g. `300/60`."""
    try:
        limit, _, period = text.partition("/")
        return int(limit), float(period or 60)
    except ValueError as exc:
        raise click.BadParameter(f"expected LIMIT/SECONDS such as 300/60, got {text!r}") from exc


@main.command(context_settings={"show_default": True})
@click.option("--host", default="127.0.0.1", help="Interface to bind (loopback by default).")
@click.option(
    "--port",
    default=8765,
    type=int,
    help="Port; the connector's default extend.base_url is http://127.0.0.1:8765/api.",
)
@click.option(
    "--seed",
    default=1,
    type=int,
    help="Seed of the data generator: same seed and sizes, same data.",
)
@click.option(
    "--products", default=200, type=int, help="Products to generate (100,000 takes a few seconds)."
)
@click.option(
    "--customers",
    default=50,
    type=int,
    help="Customers to generate, besides the anonymous webshop customer WEB.",
)
@click.option(
    "--b2b-share",
    default=0.5,
    type=float,
    help="Share of generated customers that are B2B (org. number, price list, ...).",
)
@click.option(
    "--orders",
    default=0,
    type=int,
    help="Orders to create at start, spread over Registered/Reserved/Picked/Cancelled.",
)
@click.option(
    "--warehouses",
    default="MainWarehouse,GreenWarehouse,TEST",
    help="Comma list of warehouse names.",
)
@click.option(
    "--token",
    default="sim-token",
    help="The credential clients must send (connector setting extend.api_token).",
)
@click.option("--auth-header", default="Authorization", help="Header that carries the credential.")
@click.option(
    "--auth-scheme", default="Bearer", help="Prefix before the token; '' for a bare API key."
)
@click.option(
    "--dialect-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A TOML with the connector's [extend.dialect] keys (a connector config file will do): "
    "the simulator speaks that dialect (auth, paging names, envelope, change-date name and "
    "format, filters, fields.<Model> renames; extend.api_token too if present). Its values win "
    "over --auth-header, --auth-scheme, --envelope and --token.",
)
@click.option(
    "--null-empty-lists",
    is_flag=True,
    help="Send an empty list in a response as null (as .NET services often do).",
)
@click.option(
    "--envelope",
    type=click.Choice(["body", "headers"]),
    default="body",
    help="List paging: `body` = {items,page,pageSize,totalCount,totalPages}; `headers` = bare "
    "array + x-total-* headers.",
)
@click.option(
    "--page-size",
    "default_page_size",
    default=100,
    type=int,
    help="Page size when the client gives none.",
)
@click.option(
    "--max-page-size", default=500, type=int, help="Larger page sizes are capped to this."
)
@click.option(
    "--timezone", default="Europe/Stockholm", help="Zone of every date-time the API shows."
)
@click.option(
    "--start-time",
    default=None,
    help="Start the clock at this ISO-8601 instant (with offset) instead of now.",
)
@click.option(
    "--rate-limits/--no-rate-limits",
    default=True,
    help="Enforce the three rate-limit groups (429 when spent).",
)
@click.option(
    "--rate-standard", default="300/60", help="Standard group (single GETs): LIMIT/SECONDS."
)
@click.option("--rate-heavy", default="60/60", help="Heavy group (lists): LIMIT/SECONDS.")
@click.option(
    "--rate-write", default="120/60", help="Write group (POST/PUT/DELETE): LIMIT/SECONDS."
)
@click.option(
    "--webhook-url",
    default="http://127.0.0.1:8700/webhooks/extend",
    help="Register this callback for all 18 events (the connector's default webhook inbox).",
)
@click.option(
    "--no-webhook",
    is_flag=True,
    help="Register no webhook at start (add them later with PUT /_sim/webhooks/{name}).",
)
@click.option(
    "--webhook-secret",
    default="sim-webhook-secret",
    help="Secret of that registration (connector setting extend.webhook_secret).",
)
@click.option(
    "--webhook-warehouses",
    default="",
    help="Comma list: only notifications of these warehouses (empty = all).",
)
@click.option(
    "--webhook-batch-size",
    default=100,
    type=int,
    help="Notifications raised together are sent in POSTs of at most this many.",
)
@click.option(
    "--time-scale",
    default=1.0,
    type=float,
    help="Multiplies the webhook retry delays (1 min, then 4 min); 0.01 = 0.6 s / 2.4 s.",
)
@click.option(
    "--swedish-numbers",
    is_flag=True,
    help='Format webhook Details numbers the Swedish way ("5 324", "12,5").',
)
@click.option(
    "--error-rate",
    default=0.0,
    type=float,
    help="Probability of a technical 5xx on every /api call.",
)
@click.option("--latency", default=0.0, type=float, help="Seconds added to every /api response.")
@click.option(
    "--latency-jitter", default=0.0, type=float, help="Plus a uniform random 0..this many seconds."
)
@click.option(
    "--outage", is_flag=True, help="Start in a full outage (ended with DELETE /_sim/outage)."
)
@click.option(
    "--outage-mode",
    type=click.Choice(["503", "drop"]),
    default="503",
    help="Outage answers: 503 Technical body, or the connection is dropped unanswered.",
)
@click.option(
    "--throttle-storm",
    default=0.0,
    type=float,
    help="Probability of a 429 whatever the budget left.",
)
@click.option(
    "--lost-response-rate",
    default=0.0,
    type=float,
    help="Probability that a successful write's response "
    "is lost (connection dropped after the write).",
)
@click.option(
    "--webhook-duplicate-rate",
    default=0.0,
    type=float,
    help="Probability a delivery is POSTed twice.",
)
@click.option(
    "--webhook-drop-rate", default=0.0, type=float, help="Probability a delivery is never sent."
)
@click.option(
    "--webhook-reorder", is_flag=True, help="Send the deliveries of one burst in reverse order."
)
@click.option(
    "--extra-fields",
    is_flag=True,
    help="Append an unknown field to every JSON object (Extend may add fields).",
)
@click.option(
    "--unknown-webhook-actions",
    is_flag=True,
    help="Add a notification with an unknown Action to every delivery.",
)
def simulator(
    host: str,
    port: int,
    seed: int,
    products: int,
    customers: int,
    b2b_share: float,
    orders: int,
    warehouses: str,
    token: str,
    auth_header: str,
    auth_scheme: str,
    dialect_file: Path | None,
    null_empty_lists: bool,
    envelope: str,
    default_page_size: int,
    max_page_size: int,
    timezone: str,
    start_time: str | None,
    rate_limits: bool,
    rate_standard: str,
    rate_heavy: str,
    rate_write: str,
    webhook_url: str,
    no_webhook: bool,
    webhook_secret: str,
    webhook_warehouses: str,
    webhook_batch_size: int,
    time_scale: float,
    swedish_numbers: bool,
    error_rate: float,
    latency: float,
    latency_jitter: float,
    outage: bool,
    outage_mode: str,
    throttle_storm: float,
    lost_response_rate: float,
    webhook_duplicate_rate: float,
    webhook_drop_rate: float,
    webhook_reorder: bool,
    extra_fields: bool,
    unknown_webhook_actions: bool,
) -> None:
    """Run the bundled Extend Commerce simulator (API under /api, driving API under /_sim).

    It speaks the house contract (docs/simulator.md): the connector's defaults
    (extend.base_url http://127.0.0.1:8765/api, token sim-token, webhook secret
    sim-webhook-secret, inbox http://127.0.0.1:8700/webhooks/extend) work unchanged.
    --dialect-file makes it speak another dialect: give it the connector's config file.
    Every fault can also be switched at run time: PATCH /_sim/faults.
    """
    from extend_connector.simulator import (
        FaultConfig,
        RateLimit,
        SimulatorConfig,
        WebhookRegistration,
        serve,
    )

    try:
        limits = {
            name: RateLimit(limit=lim, period_seconds=per)
            for name, (lim, per) in (
                ("standard", _rate(rate_standard)),
                ("heavy", _rate(rate_heavy)),
                ("write", _rate(rate_write)),
            )
        }
        hooks = (
            ()
            if no_webhook
            else (
                WebhookRegistration(
                    callback_url=webhook_url,
                    secret=webhook_secret,
                    warehouses=tuple(w.strip() for w in webhook_warehouses.split(",") if w.strip()),
                ),
            )
        )
        dialect: dict[str, Any] = {
            "token": token,
            "auth_header": auth_header,
            "auth_scheme": auth_scheme,
            "envelope": envelope,
            "null_empty_lists": null_empty_lists,
        }
        if dialect_file is not None:
            from extend_connector.simulator.config import dialect_file_settings

            dialect.update(dialect_file_settings(dialect_file))
        config = SimulatorConfig(
            seed=seed,
            products=products,
            customers=customers,
            b2b_share=b2b_share,
            orders=orders,
            warehouses=tuple(w.strip() for w in warehouses.split(",") if w.strip()),
            default_page_size=default_page_size,
            max_page_size=max_page_size,
            timezone=timezone,
            start_time=start_time,
            rate_limits_enabled=rate_limits,
            rate_limit_standard=limits["standard"],
            rate_limit_heavy=limits["heavy"],
            rate_limit_write=limits["write"],
            webhooks=hooks,
            webhook_batch_size=webhook_batch_size,
            time_scale=time_scale,
            swedish_numbers=swedish_numbers,
            faults=FaultConfig(
                error_rate=error_rate,
                latency_seconds=latency,
                latency_jitter_seconds=latency_jitter,
                outage=outage,
                outage_mode=outage_mode,  # type: ignore[arg-type]
                throttle_storm=throttle_storm,
                lost_response_rate=lost_response_rate,
                webhook_duplicate_rate=webhook_duplicate_rate,
                webhook_drop_rate=webhook_drop_rate,
                webhook_reorder=webhook_reorder,
                extra_fields=extra_fields,
                unknown_webhook_actions=unknown_webhook_actions,
            ),
            **dialect,
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"Extend Commerce simulator: API http://{host}:{port}/api  driving API "
        f"http://{host}:{port}/_sim  (seed {seed}, {products} "
        f"products, {customers} customers; Ctrl+C stops)"
    )
    serve(config, host=host, port=port)


@main.command()
@click.argument("data_point", type=click.Choice(SYNC_DATA_POINTS))
@click.option("--full", is_flag=True, help="Ignore the cursor and read everything.")
@click.option(
    "--dry-run", is_flag=True, help="Fetch and diff, but write nothing and tell the shop nothing."
)
@click.pass_context
def sync(ctx: click.Context, data_point: str, full: bool, dry_run: bool) -> None:
    """Run one sync of DATA_POINT now, with progress and a summary."""
    settings = _settings(ctx)
    sys.exit(run_sync_command(settings, data_point, full=full, dry_run=dry_run))


def run_sync_command(settings: Settings, data_point: str, *, full: bool, dry_run: bool) -> int:
    """The body of `extend-connector sync`: returns the exit code."""
    from rich.console import Console

    from extend_connector.flows.sync import (
        EXIT_OK,
        EXIT_SCOPE_OFF,
        run_sweep,
        scope_off,
        summary_table,
    )
    from extend_connector.service import SWEEPS

    console = Console(stderr=True)
    why = scope_off(settings, data_point)
    if why is not None:
        console.print(f"nothing to sync: {why}")
        return EXIT_SCOPE_OFF
    # Only a job-engine client: the running service delivers the events this sweep publishes.
    with _connector(settings) as connector:
        result = run_sweep(
            connector.context, SWEEPS[data_point], full=full, dry_run=dry_run, console=console
        )
    Console().print(summary_table(result))
    return EXIT_OK


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the snapshot as JSON.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show freshness of every data point, orders not yet in Extend, queue depth and parked
    failures.

    Read-only: never creates or migrates a database.
    """
    import json

    from extend_connector.flows import failures as parked

    settings = _settings(ctx)
    with _connector(settings, read_only=True) as _:
        snap = parked.status_snapshot()
    if as_json:
        click.echo(json.dumps(snap, indent=2))
        return
    click.echo(f"now {snap['now']}")
    click.echo("data points (change-date cursors):")
    for c in snap["cursors"] or [
        {
            "name": "(no sweep has run yet)",
            "highWaterMark": None,
            "lastRunAt": None,
            "running": False,
        }
    ]:
        state = " (running)" if c["running"] else ""
        click.echo(
            f"  {c['name']:<22} last run {c['lastRunAt'] or '-':<34} up to "
            f"{c['highWaterMark'] or '-'}{state}"
        )
    click.echo("local copy (newest confirmation from Extend):")
    for table, info in snap["confirmed"].items():
        click.echo(f"  {table:<22} {info['rows']:>8} rows, newest {info['newest'] or '-'}")
    queues = snap["queues"]
    click.echo(
        "queues (jobs waiting or running): "
        + (", ".join(f"{k} {v}" for k, v in sorted(queues.items())) or "empty")
    )
    failed = snap["failures"]
    click.echo(
        "parked failures: "
        + (", ".join(f"{k} {v}" for k, v in sorted(failed.items())) or "none")
        + ("  (see `extend-connector failures list`)" if failed else "")
    )
    unsent = snap["ordersNotInExtend"]
    click.echo(
        f"orders acknowledged, not yet in Extend: {unsent['count']}"
        + (f", oldest received {unsent['oldest']}" if unsent["oldest"] else "")
        + (
            f"; {unsent['stuck']} not moving for over {settings.engine.stuck_order_minutes:g} min "
            "(see the log's order_stuck / order_job_resumed lines)"
            if unsent["stuck"]
            else ""
        )
    )
    outbox = snap["outbox"]
    click.echo(
        f"events owed to the shop: {outbox['pending']}"
        + (f", oldest {outbox['oldest']}" if outbox["oldest"] else "")
        + (
            f"; last failure: {failed['key']} after {failed['attempts']} attempt(s): "
            f"{failed['error']}"
            if (failed := outbox.get("lastError"))
            else ""
        )
    )
    click.echo(
        "marked, waiting for a fetch: " + ", ".join(f"{k} {v}" for k, v in snap["marked"].items())
    )
    limits = snap["rateLimits"]
    click.echo(
        "fleet rate limit (bucket full again in): "
        + (
            ", ".join(f"{g} {v['fullAgainInSeconds']:.1f} s" for g, v in limits.items())
            or "not in use (extend.shared_rate_limit)"
        )
    )
    click.echo(
        "processes running jobs (engine_executors):" + ("" if snap["executors"] else " none yet")
    )
    for ex in snap["executors"]:
        held = "?" if ex["runningJobs"] is None else ex["runningJobs"]
        if ex["seenAt"] is None:
            seen = "never heard of (older than the heartbeat)"
        elif ex["alive"]:
            seen = f"alive, seen {ex['secondsSinceSeen']:g} s ago"
        else:
            seen = (
                f"GONE, not heard of for {ex['secondsSinceSeen']:g} s (its running jobs go back "
                "to their queues)"
            )
        click.echo(f"  {ex['executorId']:<16} {ex['role'] or '-':<7} {seen}; running jobs: {held}")


@main.group()
def failures() -> None:
    """List, inspect and replay work that failed and needs a person."""


_FAILURE_FILTERS = [
    click.option("--kind", default=None, help="Only this kind (order, shop_delivery, job, ...)."),
    click.option(
        "--reason",
        default=None,
        help="Only failures whose reason code or message contains this text (any case).",
    ),
    click.option(
        "--older-than",
        default=None,
        metavar="AGE",
        help="Only failures parked longer ago than AGE: 30m, 12h, 2d.",
    ),
]


def _failure_filters(func: Any) -> Any:
    for option in reversed(_FAILURE_FILTERS):
        func = option(func)
    return func


def _age(text: str | None) -> timedelta | None:
    if text is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = text[:-1], text[-1:].lower()
    try:
        seconds = float(number) * units[unit]
    except (KeyError, ValueError):
        raise click.BadParameter(
            f"an age is a number and a unit s/m/h/d (30m, 12h, 2d), got {text!r}",
            param_hint="--older-than",
        ) from None
    if seconds <= 0:
        raise click.BadParameter("an age must be positive", param_hint="--older-than")
    return timedelta(seconds=seconds)


def _filter(kind: str | None, reason: str | None, older_than: str | None, *, all_: bool) -> Any:
    from extend_connector.flows import failures as parked

    return parked.Filter(
        include_resolved=all_, kind=kind, reason=reason, older_than=_age(older_than)
    )


@failures.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include resolved and dismissed failures.")
@_failure_filters
@click.option("--limit", default=200, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def failures_list(
    ctx: click.Context,
    show_all: bool,
    kind: str | None,
    reason: str | None,
    older_than: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List parked failures, newest first: open and retrying ones (--all: closed ones too).

    Read-only: never creates or migrates a database.
    """
    import json

    from rich.console import Console
    from rich.table import Table

    from extend_connector.flows import failures as parked

    where = _filter(kind, reason, older_than, all_=show_all)
    settings = _settings(ctx)
    with _connector(settings, read_only=True) as _:
        rows = parked.list_failures(where=where, limit=limit)
    if as_json:
        click.echo(json.dumps([f.as_json() for f in rows], indent=2, ensure_ascii=False))
        return
    if not rows:
        click.echo("no parked failures" + (" match" if kind or reason or older_than else ""))
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("id", "kind", "key", "reason", "state", "parked", "retries", "message"):
        table.add_column(column, overflow="fold", justify="right" if column == "id" else "left")
    for f in rows:
        table.add_row(
            str(f.id),
            f.kind,
            f.key,
            f.reason,
            f.state,
            f.parked_at.strftime("%Y-%m-%d %H:%M"),
            str(f.retry_count),
            f.message[:160],
        )
    Console(width=max(120, shutil.get_terminal_size().columns)).print(table)
    click.echo(f"{len(rows)} shown; `failures show ID` for one in full")


@failures.command("show")
@click.argument("failure_id")
@click.option("--json", "as_json", is_flag=True, help="Print the failure as JSON.")
@click.pass_context
def failures_show(ctx: click.Context, failure_id: str, as_json: bool) -> None:
    """Show one parked failure: what happened, what to do, and the data involved.

    Read-only: never creates or migrates a database.
    """
    import json

    from extend_connector.flows import failures as parked

    settings = _settings(ctx)
    with _connector(settings, read_only=True) as _:
        try:
            f = parked.get(_failure_id(failure_id))
        except parked.UnknownFailure as exc:
            raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(f.as_json(), indent=2, ensure_ascii=False, default=str))
        return
    lines = [
        f"failure {f.id}: {f.kind} {f.key}",
        f"  state      {f.state}" + (f" at {f.resolved_at.isoformat()}" if f.resolved_at else ""),
        f"  reason     {f.reason}",
        f"  message    {f.message}",
        f"  parked     {f.parked_at.isoformat()} (first {f.created_at.isoformat()})",
        f"  retries    {f.retry_count}"
        + (f", last: {f.detail['lastRetry']}" if f.detail.get("lastRetry") else ""),
    ]
    dismissed = f.detail.get("dismissed")
    if isinstance(dismissed, dict):
        lines.append(f"  dismissed  {dismissed.get('at')}: {dismissed.get('reason')}")
    extra = {
        k: v
        for k, v in f.detail.items()
        if k not in ("message", "parkedAt", "lastRetry", "retryingSince", "dismissed")
    }
    if extra:
        lines.append("  detail")
        lines += [
            f"    {k}: {json.dumps(v, ensure_ascii=False, default=str)}" for k, v in extra.items()
        ]
    if f.payload:
        lines.append("  data")
        lines += [
            "    " + line
            for line in json.dumps(
                f.payload, indent=2, ensure_ascii=False, default=str
            ).splitlines()
        ]
    if f.state in ("open", "retrying"):
        lines.append(
            f"  next       fix the cause, then `extend-connector failures retry {f.id}`"
            + (
                " (orders: --product LINE=SKU, --customer, --address FIELD=VALUE)"
                if f.kind == "order"
                else ""
            )
            + f"; or `failures dismiss {f.id} --reason TEXT`"
        )
    click.echo("\n".join(lines))


def _pairs(values: tuple[str, ...], option: str) -> list[tuple[str, str]]:
    out = []
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"expected NAME=VALUE, got {value!r}", param_hint=option)
        out.append((name.strip(), rest))
    return out


@failures.command("retry")
@click.argument("failure_id", required=False)
@_failure_filters
@click.option(
    "--product",
    "products",
    multiple=True,
    metavar="LINE=SKU",
    help="Parked order: replace line LINE's product number before the replay (repeatable).",
)
@click.option("--customer", default=None, help="Parked order: the customer number to send.")
@click.option(
    "--address",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Parked order: a delivery address field (name, addressLine1, zipCode, city, "
    "countryCode, ...) before the replay (repeatable).",
)
@click.pass_context
def failures_retry(
    ctx: click.Context,
    failure_id: str | None,
    kind: str | None,
    reason: str | None,
    older_than: str | None,
    products: tuple[str, ...],
    customer: str | None,
    address: tuple[str, ...],
) -> None:
    """Replay a parked failure after its cause was fixed, or every open one a filter takes.

    One failure: `failures retry ID`; a parked order can be fixed on the way (`--product 2=SKU`,
    `--customer`, `--address city=Lund`) and is still sent exactly once. Many: `failures retry
    --kind order --reason unknown_product`. A replay that queued the work leaves the failure
    `retrying` until the item goes through; if it fails again the failure is open again with
    the new reason. Exit 1 when a replay was refused.
    """
    import asyncio

    from extend_connector.flows import failures as parked
    from extend_connector.flows import orders

    edits = bool(products or customer is not None or address)
    if failure_id is None and not (kind or reason or older_than):
        raise click.UsageError("give a failure ID, or --kind/--reason/--older-than for many")
    if failure_id is not None and (kind or reason or older_than):
        raise click.UsageError("give a failure ID or filters, not both")
    if edits and failure_id is None:
        raise click.UsageError("--product/--customer/--address fix one order: give its failure ID")
    lines: dict[int, str] = {}
    for line, sku in _pairs(products, "--product"):
        if not line.isdigit():
            raise click.BadParameter(f"a line number, got {line!r}", param_hint="--product")
        lines[int(line)] = sku
    fields = dict(_pairs(address, "--address"))
    where = None if failure_id is not None else _filter(kind, reason, older_than, all_=False)
    settings = _settings(ctx)
    with _connector(settings) as connector:

        async def one(number: int) -> str:
            if edits:
                failure = await asyncio.to_thread(parked.get, number)
                if failure.kind != orders.FAILURE_KIND:
                    raise parked.FailureError(
                        f"failure {number} is of kind {failure.kind}; only a parked order can be "
                        "fixed on the way"
                    )
                changes = await asyncio.to_thread(
                    orders.amend_parked_order,
                    failure.key,
                    products=lines,
                    customer_number=customer,
                    delivery_address=fields,
                )
                for name, change in changes.items():
                    click.echo(f"{name}: {change['from']!r} -> {change['to']!r}")
            return await parked.retry(number)

        async def go() -> int:
            try:
                if failure_id is not None:
                    outcome = await one(_failure_id(failure_id))
                    click.echo(outcome)
                    return 0
                assert where is not None
                result = await parked.retry_matching(where)
                for number, message in result.replayed:
                    click.echo(f"{number}: {message}")
                for number, message in result.refused:
                    click.echo(f"{number}: not replayed: {message}", err=True)
                click.echo(f"{len(result.replayed)} replayed, {len(result.refused)} not replayed")
                return 1 if result.refused else 0
            finally:
                await connector.context.aclose()

        try:
            code = asyncio.run(go())
        except parked.FailureError as exc:
            click.echo(f"not replayed: {exc}", err=True)
            sys.exit(1)
        if code:
            sys.exit(code)


@failures.command("dismiss")
@click.argument("failure_id")
@click.option("--reason", required=True, help="Why nobody will replay it (kept with the failure).")
@click.pass_context
def failures_dismiss(ctx: click.Context, failure_id: str, reason: str) -> None:
    """Close a failure that will not be replayed (e.g. the order was entered in Extend by hand)."""
    from extend_connector.flows import failures as parked

    settings = _settings(ctx)
    with _connector(settings) as _:
        try:
            f = parked.dismiss(_failure_id(failure_id), reason)
        except parked.FailureError as exc:
            click.echo(f"not dismissed: {exc}", err=True)
            sys.exit(1)
    click.echo(f"failure {f.id} ({f.kind} {f.key}) dismissed: {reason.strip()}")


def _failure_id(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise click.BadParameter(
            f"a failure id is a number (see `failures list`), got {text!r}"
        ) from None


def _require_database(settings: Settings) -> None:
    """A read-only command must find the connector's database as the service left it: never
    create a file in the wrong folder, never migrate someone's database as a side effect."""
    from extend_connector.online_check import database

    found = database(settings)
    if not found.ok:
        raise click.ClickException(f"{found.setting}: {found.detail}")


@contextlib.contextmanager
def _connector(settings: Settings, *, read_only: bool = False) -> Iterator[Any]:
    """The connector's database, flows and a job-engine client (executes nothing): for
    commands that read state or enqueue work for the running service. `read_only`: the
    database must exist at the current revision (nothing is created or migrated)."""
    from extend_connector.service import Connector

    if read_only:
        _require_database(settings)
    connector = Connector(settings)
    try:
        connector.engine.connect()
        yield connector
    finally:
        connector.engine.shutdown()
        connector.close()


@main.group()
def admin() -> None:
    """The web console at /admin (docs/console.md)."""


@admin.command("hash-password")
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from standard input (scripts)."
)
def admin_hash_password(password_stdin: bool) -> None:
    """Print the value for `admin.password_hash` (scrypt) for a password you type."""
    from extend_connector.api.admin.auth import hash_password

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Console password", hide_input=True, confirmation_prompt=True)
    try:
        click.echo(hash_password(password))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


@main.group()
def db() -> None:
    """Database schema: upgrade or show the current revision."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Apply all migrations (also done at every start): app tables and job-engine tables."""
    from extend_connector.engine import Engine
    from extend_connector.store import migrate

    settings = _settings(ctx)
    if settings.store.is_sqlite:
        settings.store.data_dir.mkdir(parents=True, exist_ok=True)
    revision = migrate(settings.store.url)
    Engine(settings).connect().shutdown()  # creates/upgrades DBOS's tables in the same database
    click.echo(f"database at revision {revision} ({settings.store.url.split('@')[-1]})")


@db.command("current")
@click.pass_context
def db_current(ctx: click.Context) -> None:
    """Show the schema revision of the database and the newest one this version knows."""
    from extend_connector.store import current_revision, head_revision

    settings = _settings(ctx)
    current = current_revision(settings.store.url)
    head = head_revision()
    click.echo(f"current: {current or 'none (never migrated)'}\nhead:    {head}")
    if current != head:
        click.echo("run `extend-connector db upgrade` to migrate", err=True)
        ctx.exit(1)
