"""A faithful Extend Commerce simulator: house-contract API, Extend's webhooks, faults, seeded data.

Public surface (kept stable for tests and benchmarks):

    from extend_connector.simulator import SimulatorConfig, run_in_thread, build_app
    with run_in_thread(SimulatorConfig(seed=1, products=50)) as sim:
        sim.base_url, sim.admin_url, sim.token, sim.state, sim.dispatcher

See docs/simulator.md for the contract, what is Extend's documented behaviour and what is assumed.
"""

from extend_connector.simulator.app import ENDPOINTS, SimulatedConnectionDrop, Simulator
from extend_connector.simulator.config import (
    EVENTS,
    FaultConfig,
    RateLimit,
    SimulatorConfig,
    WebhookRegistration,
)
from extend_connector.simulator.errors import (
    BusinessConflict,
    SimError,
    TechnicalFailure,
    ValidationFailed,
)
from extend_connector.simulator.server import RunningSimulator, build_app, run_in_thread, serve
from extend_connector.simulator.state import Notification, SimState
from extend_connector.simulator.webhooks import render_body, sign

__all__ = [
    "ENDPOINTS",
    "EVENTS",
    "BusinessConflict",
    "FaultConfig",
    "Notification",
    "RateLimit",
    "RunningSimulator",
    "SimError",
    "SimState",
    "SimulatedConnectionDrop",
    "Simulator",
    "SimulatorConfig",
    "TechnicalFailure",
    "ValidationFailed",
    "WebhookRegistration",
    "build_app",
    "render_body",
    "run_in_thread",
    "serve",
    "sign",
]
