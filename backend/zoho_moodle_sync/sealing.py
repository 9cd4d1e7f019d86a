"""Secrets the service must reuse (a tenant's Moodle token) are stored sealed: encrypted and
authenticated with a key derived from the SECRET_KEY setting, never in the clear."""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr

from zoho_moodle_sync.errors import ConfigurationError

MIN_SECRET_KEY = 16


def _fernet(secret_key: SecretStr) -> Fernet:
    raw = secret_key.get_secret_value()
    if len(raw) < MIN_SECRET_KEY:
        raise ConfigurationError(
            "SECRET_KEY must be set (at least 16 characters) to store tenant credentials"
        )
    digest = hashlib.sha256(b"zoho-moodle-sync/sealing/v1" + raw.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def seal(value: str, secret_key: SecretStr) -> str:
    return _fernet(secret_key).encrypt(value.encode()).decode()


def unseal(sealed: str, secret_key: SecretStr) -> SecretStr:
    try:
        return SecretStr(_fernet(secret_key).decrypt(sealed.encode()).decode())
    except InvalidToken:
        raise ConfigurationError(
            "a stored tenant credential cannot be decrypted: SECRET_KEY changed since it was set"
        ) from None
