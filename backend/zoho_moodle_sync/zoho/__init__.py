"""Typed async client for the Zoho CRM REST API and its OAuth refresh-token grant."""

from zoho_moodle_sync.zoho.client import (
    MAX_CHANNEL_LIFETIME,
    MAX_IDS_PER_CALL,
    Page,
    PageCursor,
    ZohoClient,
    deleted_entries,
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
from zoho_moodle_sync.zoho.wire import MAX_PER_PAGE, MAX_WATCH_TOKEN_LENGTH

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
    "Page",
    "PageCursor",
    "RetryPolicy",
    "TokenStore",
    "WatchSubscription",
    "ZohoClient",
    "ZohoCredentials",
    "ZohoOAuth",
    "ZohoRecord",
    "ZohoUser",
    "deleted_entries",
]
