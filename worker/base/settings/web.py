"""The web process's own secrets and address, on top of every connector's settings."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from worker.base.settings.combined import Settings


class WebSettings(Settings):
    WEBHOOK_SECRET: SecretStr
    WEB_API_KEY: SecretStr
    PORT: int = Field(8000, ge=1, le=65535)
    # 127.0.0.1 outside a container; docker-compose.yml sets 0.0.0.0.
    WEB_HOST: str = "127.0.0.1"

    @field_validator("WEB_API_KEY")
    @classmethod
    def _api_key(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("must not be empty (every read request would be refused)")
        return value

    @field_validator("WEBHOOK_SECRET")
    @classmethod
    def _whsec(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith("whsec_"):
            raise ValueError("must be the endpoint's Svix signing secret (whsec_…)")
        return value
