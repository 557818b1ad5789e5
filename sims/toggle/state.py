"""Toggle's books in memory: products, sites, cards, and the line items each reference made."""

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sims.clock import format_us
from sims.faults import Faults
from sims.toggle.config import ToggleConfig
from sims.toggle.credits import Credits
from sims.toggle.stats import ToggleStats
from sims.toggle.tokens import Tokens

CARD_PREFIX = "63011900"
_CARD_YEARS_US = 3 * 365 * 24 * 3600 * 1_000_000  # issued cards expire three years on
PRODUCTS = ((1, "In-store Gift"), (2, "Digital Gift Card"), (3, "Reward Card"))
# (number, PIN, balance in pence, alias number): the cards every simulator starts with.
SEEDED_CARDS = (
    ("6301190000000010001", "1234", 5000, None),
    ("6301190000000010002", "4321", 0, None),
    ("6301190000000010003", "9876", 2500, "4000123412341234"),
    ("6301190000000010004", "0420", 100000, None),
)


@dataclass(slots=True)
class Card:
    id: int
    card_reference: str
    pin: str
    balance: int
    initial_balance: int
    expiry_time: str
    product_name: str
    card_alias_card_reference: str | None = None


@dataclass(slots=True)
class LineItem:
    id: int
    value: int  # the change it made to its card's balance, in pence
    card: Card
    reference: str | None
    reverses: int | None = None  # the line item a reversal line item undoes
    reversed_by: int | None = None


@dataclass(slots=True)
class Order:
    id: int
    created_us: int
    reference: str | None
    total: int
    line_items: list[LineItem]
    emails: list[str] = field(default_factory=list)  # who Toggle "emailed" a card

    @property
    def value(self) -> int:
        return sum(item.value for item in self.line_items)


class ToggleState:
    def __init__(self, config: ToggleConfig, clock: Callable[[], float] = time.time) -> None:
        self._startup_config = config
        self.clock = clock
        self.reset()

    def reset(self) -> None:
        """The seeded books, no tokens, no faults, full credits and the start-up configuration."""
        self.config = self._startup_config
        self.tokens = Tokens(self.clock)
        self.credits = Credits(self.config.credits_max, self.config.credits_refill_per_second,
                               self.clock)
        self.faults = Faults()
        self.stats = ToggleStats()
        self.rng = random.Random(0)  # fixed seed: card numbers and PINs repeat run after run
        self.products = dict(PRODUCTS)
        self.cards: dict[int, Card] = {}
        self.line_items: dict[int, LineItem] = {}
        self.orders: dict[int, Order] = {}
        # reference → ("order" | "adjustment" | "reversal", id): one namespace per account.
        self.references: dict[str, tuple[str, int]] = {}
        self.adjustments: dict[int, LineItem] = {}
        self.reversals: dict[int, list[LineItem]] = {}
        self._ids = {"card": 500, "line_item": 9000, "order": 3000, "adjustment": 7000,
                     "reversal": 8000}
        self._next_number = 20_000_000
        for number, pin, balance, alias in SEEDED_CARDS:
            self.add_card(balance, "In-store Gift", number=number, pin=pin, alias=alias)

    def next_id(self, kind: str) -> int:
        self._ids[kind] += 1
        return self._ids[kind]

    def now_us(self) -> int:
        return int(self.clock() * 1000) * 1000  # milliseconds, like the stamps an API hands out

    def add_card(self, balance: int, product_name: str, *, number: str | None = None,
                 pin: str | None = None, alias: str | None = None) -> Card:
        if number is None:
            self._next_number += 1
            number = f"{CARD_PREFIX}{self._next_number:011d}"
        card = Card(
            id=self.next_id("card"),
            card_reference=number,
            pin=pin if pin is not None else f"{self.rng.randrange(10_000):04d}",
            balance=balance,
            initial_balance=balance,
            expiry_time=format_us(self.now_us() + _CARD_YEARS_US),
            product_name=product_name,
            card_alias_card_reference=alias,
        )
        self.cards[card.id] = card
        return card

    def find_card(self, number: str) -> Card | None:
        """By its number, or by the alias a card moved from another provider carries."""
        for card in self.cards.values():
            if number in (card.card_reference, card.card_alias_card_reference):
                return card
        return None

    def add_line_item(self, value: int, card: Card, reference: str | None,
                      reverses: int | None = None) -> LineItem:
        item = LineItem(self.next_id("line_item"), value, card, reference, reverses)
        self.line_items[item.id] = item
        return item

    def created_by(self, reference: str) -> list[LineItem]:
        """The line items a merchant_transaction_reference created (empty when none)."""
        return [item for item in self.line_items.values() if item.reference == reference]

    def reconfigure(self) -> None:
        self.credits.reconfigure(self.config.credits_max, self.config.credits_refill_per_second)
