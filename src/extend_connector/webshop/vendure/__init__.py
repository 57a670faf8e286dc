"""The Vendure adapter (`webshop.adapter = "vendure"`): the Admin API client, the adapter, the
order mapping, and (in `node/`) the Vendure plugin and the test shop. docs/webshops/vendure.md."""

from __future__ import annotations

from typing import TYPE_CHECKING

from extend_connector.webshop.vendure.adapter import VendureWebshop

if TYPE_CHECKING:
    from extend_connector.settings import Settings

__all__ = ["VendureWebshop", "from_settings"]


def from_settings(settings: Settings) -> VendureWebshop:
    """The adapter the settings describe (validated: admin_api_url and password are set)."""
    v = settings.webshop.vendure
    assert v.admin_api_url is not None and v.password is not None  # Settings._vendure
    return VendureWebshop(
        admin_api_url=str(v.admin_api_url),
        username=v.username,
        password=v.password.get_secret_value(),
        channel_token=v.channel_token,
        stock_locations=v.stock_locations,
        sum_location=v.sum_location,
        default_customer_number=settings.scope.default_customer_number,
        customers_to_extend=settings.scope.customers.value == "to_extend",
        language_code=v.language_code,
        timeout=v.timeout_seconds,
    )
