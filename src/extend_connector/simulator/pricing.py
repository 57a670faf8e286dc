"""The simulator's "net best price right now" rule for one customer and one product. [ASSUMPTION]

Extend documents that customers carry price lists, customer groups and discounts, and that
`ProductPrices`-like data exists, but not how a net price is chosen. The rule here:

* candidates: the product's list price; the customer's price-list price for the product;
  the list price minus the customer's discount-list percent (a product entry wins over its
  product-group entry); every campaign running now that covers the product and is open to
  everyone or to the customer's group;
* the net price is the LOWEST candidate; nothing stacks (a discount applies to the list price,
  never to a price-list or campaign price);
* on a tie the less special source wins, in the order ListPrice, PriceList, Discount, Campaign;
* prices exclude VAT and are rounded half-up to 2 decimals (`Discount` only; the others are
  stored with 2 decimals already).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

SOURCES = ("ListPrice", "PriceList", "Discount", "Campaign")


@dataclass(frozen=True, kw_only=True, slots=True)
class CampaignOffer:
    code: str
    price: float
    valid_from_ms: int
    valid_to_ms: int


@dataclass(frozen=True, kw_only=True, slots=True)
class PriceQuote:
    unit_price: float
    list_price: float
    source: str  # one of SOURCES
    price_list_price: float | None
    discount_percent: float | None
    campaign: CampaignOffer | None  # the best running campaign, whether or not it won


def round_price(value: float) -> float:
    return float(Decimal(repr(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def best_price(
    *,
    list_price: float,
    price_list_price: float | None = None,
    discount_percent: float | None = None,
    campaigns: Iterable[CampaignOffer] = (),
) -> PriceQuote:
    """Pick the net price among the candidates (see the module docstring for the rule)."""
    best_campaign: CampaignOffer | None = None
    for offer in campaigns:
        if best_campaign is None or offer.price < best_campaign.price:
            best_campaign = offer
    candidates: list[tuple[float, str]] = [(list_price, "ListPrice")]
    if price_list_price is not None:
        candidates.append((price_list_price, "PriceList"))
    if discount_percent is not None:
        candidates.append(
            (round_price(list_price * (100.0 - discount_percent) / 100.0), "Discount")
        )
    if best_campaign is not None:
        candidates.append((best_campaign.price, "Campaign"))
    price, source = candidates[0]
    for candidate, name in candidates[1:]:
        if candidate < price:  # strict: on a tie the earlier (less special) source stays
            price, source = candidate, name
    return PriceQuote(
        unit_price=price,
        list_price=list_price,
        source=source,
        price_list_price=price_list_price,
        discount_percent=discount_percent,
        campaign=best_campaign,
    )
