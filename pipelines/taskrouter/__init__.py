"""TaskRouter source: HTTP client, paging, retries, rate limit and a local emulator.

Plain Python (requests, urllib3): no Dagster and no SQL, so it can be reused and tested alone.
"""

from pipelines.taskrouter.client import TaskRouterClient
from pipelines.taskrouter.credentials import Credentials, credentials_from_env
from pipelines.taskrouter.errors import (
    TaskRouterAuthError,
    TaskRouterError,
    TaskRouterNotFound,
    UnsafeNextPageUrl,
)
from pipelines.taskrouter.options import ClientOptions
from pipelines.taskrouter.reads import WorkerRead

__all__ = [
    "ClientOptions",
    "Credentials",
    "TaskRouterAuthError",
    "TaskRouterClient",
    "TaskRouterError",
    "TaskRouterNotFound",
    "UnsafeNextPageUrl",
    "WorkerRead",
    "credentials_from_env",
]
