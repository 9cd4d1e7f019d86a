"""Typed async client for the Zoho CRM REST API and its OAuth refresh-token grant."""

from zoho_moodle_sync.zoho.client import (
    MAX_CHANNEL_LIFETIME,
    MAX_IDS_PER_CALL,
    MAX_PER_PAGE,
    MAX_WATCH_TOKEN_LENGTH,
    ZohoClient,
)
from zoho_moodle_sync.zoho.models import (
    ACCOUNTS_SERVERS,
    API_DOMAINS,
    CachedToken,
    DataCentre,
    DeletedRecord,
    DeletedType,
    WatchSubscription,
    ZohoCredentials,
    ZohoRecord,
    ZohoUser,
)
from zoho_moodle_sync.zoho.oauth import (
    DEFAULT_REFRESH_MARGIN,
    InMemoryTokenStore,
    TokenStore,
    ZohoOAuth,
)
from zoho_moodle_sync.zoho.retry import RetryPolicy

__all__ = [
    "ACCOUNTS_SERVERS",
    "API_DOMAINS",
    "DEFAULT_REFRESH_MARGIN",
    "MAX_CHANNEL_LIFETIME",
    "MAX_IDS_PER_CALL",
    "MAX_PER_PAGE",
    "MAX_WATCH_TOKEN_LENGTH",
    "CachedToken",
    "DataCentre",
    "DeletedRecord",
    "DeletedType",
    "InMemoryTokenStore",
    "RetryPolicy",
    "TokenStore",
    "WatchSubscription",
    "ZohoClient",
    "ZohoCredentials",
    "ZohoOAuth",
    "ZohoRecord",
    "ZohoUser",
]
