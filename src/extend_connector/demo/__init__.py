"""`extend-connector demo`: the whole system against the bundled simulator, shown live and
self-checked.

A seeded simulator plays Extend, the connector runs on a SQLite file with in-process workers,
a scripted shop uses the `/v1` API and a driver plays Extend's warehouse staff; at the end the
demo settles and compares every order and balance with the simulator's true state.

    from extend_connector.demo import DemoOptions, run_demo
    exit_code = run_demo(DemoOptions(duration=60, chaos=True))
"""

from extend_connector.demo.runner import (
    EXIT_CHECK_FAILED,
    EXIT_INTERRUPTED,
    EXIT_PASSED,
    DemoOptions,
    run_demo,
)

__all__ = ["EXIT_CHECK_FAILED", "EXIT_INTERRUPTED", "EXIT_PASSED", "DemoOptions", "run_demo"]
