"""Toggle (gift cards): on where its API user is set; all of its required settings or none."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import AnyHttpUrl, BaseModel, Field, SecretStr, model_validator
from pydantic_settings import NoDecode

from worker.base.settings.values import UNSET_IF_EMPTY, pairs_of, require_all_or_none

# Toggle's API user: all of these or none.
TOGGLE_SETTINGS = ("TOGGLE_USERNAME", "TOGGLE_PASSWORD", "TOGGLE_ACCOUNT_ID")


class ToggleSettings(BaseModel):
    # Toggle (gift cards): on when its API user is set; all three or none (see _toggle_set).
    TOGGLE_API_URL: AnyHttpUrl = AnyHttpUrl("https://api.mytoggle.io/graphql")
    TOGGLE_USERNAME: Annotated[str | None, UNSET_IF_EMPTY] = None
    TOGGLE_PASSWORD: Annotated[SecretStr | None, UNSET_IF_EMPTY] = None
    TOGGLE_ACCOUNT_ID: Annotated[int | None, UNSET_IF_EMPTY] = None
    TOGGLE_MERCHANT_ID: int = 26
    TOGGLE_CURRENCY: str = Field("GBP", pattern=r"^[A-Z]{3}$")
    # None: the account's `In-store Gift` product, looked up once.
    TOGGLE_PRODUCT_ID: Annotated[int | None, UNSET_IF_EMPTY] = None
    # `name=reference,name=reference`: till site names to Toggle site references.
    TOGGLE_SITES: Annotated[dict[str, str], NoDecode, pairs_of("name=reference", "site")] = \
        Field(default_factory=dict)
    TOGGLE_VALIDATE_CARD_NUMBER: bool = True
    # The API user's credit budget (contract: 8,000, refilled 5,000 per 10 minutes); another
    # tier, or a simulator, is set here so every process paces itself to the real budget.
    TOGGLE_CREDITS_MAX: float = Field(8000, gt=0)
    TOGGLE_CREDITS_REFILL_PER_SECOND: float = Field(5000 / 600, gt=0)

    @model_validator(mode="after")
    def _toggle_set(self) -> Self:
        """Some of Toggle's required settings but not all: stop, naming the missing ones."""
        require_all_or_none(self, TOGGLE_SETTINGS)
        return self

    @property
    def toggle_enabled(self) -> bool:
        return self.TOGGLE_USERNAME is not None
