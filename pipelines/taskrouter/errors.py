"""Exceptions raised by the TaskRouter client.

Messages are built only from the request path and Twilio's error body, never from the
request's headers or the session's auth, so a secret cannot leak through ``str(exc)``.
"""

from __future__ import annotations


class TaskRouterError(Exception):
    """An error answer from TaskRouter (or something that behaves like one)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: int | None = None,
        more_info: str | None = None,
        path: str | None = None,
    ) -> None:
        self.message = message
        self.status = status
        self.code = code
        self.more_info = more_info
        self.path = path
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [self.message]
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.code is not None:
            parts.append(f"Twilio error {self.code}")
        if self.path:
            parts.append(f"on {self.path}")
        if self.more_info:
            parts.append(f"see {self.more_info}")
        return " | ".join(parts)


class TaskRouterAuthError(TaskRouterError):
    """401/403: retrying cannot help, so the sync stops at once."""


class TaskRouterNotFound(TaskRouterError):
    """404: a workspace or worker that does not exist (or no longer exists)."""


class TaskRouterBadPage(TaskRouterError):
    """A 200 whose body is not the TaskRouter list envelope we expect."""


class UnsafeNextPageUrl(TaskRouterError):
    """A ``next_page_url`` that points away from the configured API host.

    Following it would send the account's credentials to another server.
    """


class ReaderProcessFailed(TaskRouterError):
    """The child process reading reservations died or failed outside TaskRouter's answers."""


class MissingCredentials(ValueError):
    """No usable TaskRouter credentials in the environment."""
