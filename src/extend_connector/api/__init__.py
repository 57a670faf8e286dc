"""The ASGI app: webhook inbox, the shop's read API (/v1), admin, /metrics and /healthz."""

from extend_connector.api.app import create_app

__all__ = ["create_app"]
