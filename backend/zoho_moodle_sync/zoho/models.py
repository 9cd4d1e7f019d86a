"""Typed values the Zoho CRM client takes and returns: credentials, cached tokens, API results."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

ZohoRecord = dict[str, Any]
"""One record exactly as the REST API returns it: API field names to JSON values."""

DeletedType = Literal["all", "recycle", "permanent"]


class DataCentre(StrEnum):
    """The Zoho data centres; an org lives in exactly one and its tokens only work there."""

    US = "us"
    EU = "eu"
    IN = "in"
    AU = "au"
    CN = "cn"
    JP = "jp"
    CA = "ca"
    SA = "sa"
    UK = "uk"


ACCOUNTS_SERVERS: dict[DataCentre, str] = {
    DataCentre.US: "https://accounts.zoho.com",
    DataCentre.EU: "https://accounts.zoho.eu",
    DataCentre.IN: "https://accounts.zoho.in",
    DataCentre.AU: "https://accounts.zoho.com.au",
    DataCentre.CN: "https://accounts.zoho.com.cn",
    DataCentre.JP: "https://accounts.zoho.jp",
    DataCentre.CA: "https://accounts.zohocloud.ca",
    DataCentre.SA: "https://accounts.zoho.sa",
    DataCentre.UK: "https://accounts.zoho.uk",
}

# Used only when a token response leaves out `api_domain`; Zoho normally names it.
API_DOMAINS: dict[DataCentre, str] = {
    DataCentre.US: "https://www.zohoapis.com",
    DataCentre.EU: "https://www.zohoapis.eu",
    DataCentre.IN: "https://www.zohoapis.in",
    DataCentre.AU: "https://www.zohoapis.com.au",
    DataCentre.CN: "https://www.zohoapis.com.cn",
    DataCentre.JP: "https://www.zohoapis.jp",
    DataCentre.CA: "https://www.zohoapis.ca",
    DataCentre.SA: "https://www.zohoapis.sa",
    DataCentre.UK: "https://www.zohoapis.uk",
}


def _http_url(value: str) -> str:
    if not value.startswith(("https://", "http://")):
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/")


class ZohoCredentials(BaseModel):
    """A self-client or server-based client's refresh-token credentials for one Zoho org."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    refresh_token: SecretStr
    data_centre: DataCentre = DataCentre.US
    accounts_url: str | None = None

    @field_validator("client_secret", "refresh_token")
    @classmethod
    def _not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("must not be empty")
        return value

    @field_validator("accounts_url")
    @classmethod
    def _accounts_url(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value)

    @property
    def accounts_server(self) -> str:
        """The accounts server that refreshes tokens: the override, else the data centre's."""
        return self.accounts_url or ACCOUNTS_SERVERS[self.data_centre]

    @property
    def default_api_domain(self) -> str:
        return API_DOMAINS[self.data_centre]

    @property
    def cache_key(self) -> str:
        """Names the token in a shared store; a digest, so the key reveals no secret."""
        material = "\n".join(
            (self.accounts_server, self.client_id, self.refresh_token.get_secret_value())
        )
        return "zoho-oauth:" + hashlib.sha256(material.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class CachedToken:
    """An access token with the API domain it belongs to and its absolute expiry (aware UTC)."""

    access_token: str = field(repr=False)
    api_domain: str
    expires_at: datetime

    def usable_at(self, now: datetime, margin: timedelta) -> bool:
        """True while more than `margin` of the token's life is left at `now`."""
        return now + margin < self.expires_at


class ZohoUser(BaseModel):
    """A user reference as Zoho embeds it (`Owner`, `Created_By`, `deleted_by`, ...)."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)

    id: str
    name: str | None = None
    email: str | None = None


class DeletedRecord(BaseModel):
    """One entry of `GET /{module}/deleted`."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)

    id: str
    display_name: str | None = None
    type: str
    deleted_time: datetime | None = None
    deleted_by: ZohoUser | None = None
    created_by: ZohoUser | None = None


class WatchSubscription(BaseModel):
    """One module's subscription as `/actions/watch` confirms it."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)

    channel_id: str
    resource_name: str
    resource_id: str | None = None
    resource_uri: str | None = None
    channel_expiry: datetime
