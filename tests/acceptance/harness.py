"""Moved to `tests/support/processes.py`; this name stays only so branches written before the
move still import. Import `support.processes` in new tests."""

from support.processes import CLI, Proc, free_port, running, wait_for

__all__ = ["CLI", "Proc", "free_port", "running", "wait_for"]
