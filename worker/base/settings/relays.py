"""The event relays (issue 13): Toggle's webhooks to Atreemo, Nector's to Contlo; each on
where its settings are set, all of them or none."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import AnyHttpUrl, BaseModel, Field, SecretStr, model_validator
from pydantic_settings import NoDecode

from worker.base.settings.values import UNSET_IF_EMPTY, pairs_of, require_all_or_none

# What each relay needs, all or none.
TOGGLE_RELAY_SETTINGS = ("TOGGLE_WEBHOOK_SECRET", "ATREEMO_WEBHOOK_URL", "ATREEMO_WEBHOOK_SECRET")
NECTOR_RELAY_SETTINGS = ("NECTOR_WEBHOOK_SECRET", "CONTLO_API_KEY")


class RelaySettings(BaseModel):
    # Event relays (issue 13): each on when its settings are set; all or none (_relays_set).
    TOGGLE_WEBHOOK_SECRET: Annotated[SecretStr | None, UNSET_IF_EMPTY] = None
    ATREEMO_WEBHOOK_URL: Annotated[AnyHttpUrl | None, UNSET_IF_EMPTY] = None
    ATREEMO_WEBHOOK_SECRET: Annotated[SecretStr | None, UNSET_IF_EMPTY] = None
    ATREEMO_RATE_LIMIT: float = Field(20, gt=0)
    ATREEMO_SENDS_EMAILS: bool = False
    NECTOR_WEBHOOK_SECRET: Annotated[SecretStr | None, UNSET_IF_EMPTY] = None
    CONTLO_BASE_URL: AnyHttpUrl = AnyHttpUrl("https://api.contlo.com")
    CONTLO_API_KEY: Annotated[SecretStr | None, UNSET_IF_EMPTY] = None
    CONTLO_RATE_LIMIT: float = Field(10, gt=0)
    # `topic=Event Name,topic=Event Name`: overrides of the contract's mapping.
    CONTLO_EVENT_NAMES: Annotated[dict[str, str], NoDecode,
                                  pairs_of("topic=Event Name", "topic")] = \
        Field(default_factory=dict)
    RELAY_MAX_AGE_SECONDS: int = Field(259200, ge=60)

    @model_validator(mode="after")
    def _relays_set(self) -> Self:
        """Per relay, some of its required settings but not all: stop, naming the missing."""
        require_all_or_none(self, TOGGLE_RELAY_SETTINGS, NECTOR_RELAY_SETTINGS)
        return self

    @property
    def toggle_relay_enabled(self) -> bool:
        """Toggle's webhooks received and relayed to Atreemo."""
        return self.TOGGLE_WEBHOOK_SECRET is not None

    @property
    def nector_relay_enabled(self) -> bool:
        """Nector's webhooks received and relayed to Contlo."""
        return self.NECTOR_WEBHOOK_SECRET is not None
