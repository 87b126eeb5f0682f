"""Which Basic-auth pair to use, decided from the environment variables of docs/configuration.md."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from pipelines.taskrouter.errors import MissingCredentials

CREDENTIAL_VARIABLES = (
    "TWILIO_API_KEY_SID",
    "TWILIO_API_KEY_SECRET",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
)


@dataclass(frozen=True)
class Credentials:
    """A Basic-auth pair; ``repr`` never shows the secret."""

    username: str
    password: str = field(repr=False)
    kind: str = "auth_token"

    def as_auth(self) -> tuple[str, str]:
        return (self.username, self.password)


def choose_credentials(
    account_sid: str | None,
    auth_token: str | None,
    api_key_sid: str | None = None,
    api_key_secret: str | None = None,
) -> Credentials:
    """API key pair when both parts are set (Twilio's recommendation), else SID + token."""
    if api_key_sid and api_key_secret:
        return Credentials(api_key_sid.strip(), api_key_secret.strip(), kind="api_key")
    if account_sid and auth_token:
        return Credentials(account_sid.strip(), auth_token.strip(), kind="auth_token")
    half_key = bool(api_key_sid) != bool(api_key_secret)
    hint = (
        " Only one of TWILIO_API_KEY_SID / TWILIO_API_KEY_SECRET is set; set both."
        if half_key
        else ""
    )
    raise MissingCredentials(
        "No TaskRouter credentials: set TWILIO_API_KEY_SID and TWILIO_API_KEY_SECRET "
        "(recommended), or TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN." + hint
    )


def credentials_from_env(env: Mapping[str, str] | None = None) -> Credentials:
    env = os.environ if env is None else env
    return choose_credentials(
        env.get("TWILIO_ACCOUNT_SID"),
        env.get("TWILIO_AUTH_TOKEN"),
        env.get("TWILIO_API_KEY_SID"),
        env.get("TWILIO_API_KEY_SECRET"),
    )
