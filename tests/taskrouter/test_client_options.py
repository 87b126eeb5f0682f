"""The client's settings are declared once (``ClientOptions``) and built in one place
(``pipelines.settings.client_options``) for the settings, the Dagster resource and the reader
process; ``SYNC_SHARDS`` and ``SYNC_SHARD_RETRIES`` fail in the one ``SettingsError``."""

from __future__ import annotations

import dataclasses
import json

import pytest

from pipelines.resources import TaskRouterResource
from pipelines.settings import SettingsError, client_options, load_settings, shard_count
from pipelines.sharding import shard_retry_policy
from pipelines.taskrouter import ClientOptions, TaskRouterClient
from pipelines.taskrouter.credentials import choose_credentials

TUNED = {"TASKROUTER_PAGE_SIZE": "200", "TASKROUTER_CONCURRENCY": "3",
         "TASKROUTER_REQUESTS_PER_SECOND": "12.5", "TASKROUTER_CONNECT_TIMEOUT_S": "2",
         "TASKROUTER_READ_TIMEOUT_S": "9", "TASKROUTER_MAX_ATTEMPTS": "4",
         "TASKROUTER_READER_PROCESS": "yes"}


def test_the_settings_become_the_clients_options():
    options = load_settings(TUNED).client_options()
    assert options == ClientOptions(page_size=200, concurrency=3, requests_per_second=12.5,
                                    connect_timeout=2.0, read_timeout=9.0, max_attempts=4,
                                    reader_process=True)
    assert load_settings({}).client_options() == ClientOptions(reader_process="auto")


def test_the_resource_builds_the_same_options_and_a_shard_gets_its_share():
    settings = load_settings(TUNED)
    resource = TaskRouterResource(account_sid="AC" + "0" * 32, auth_token="secret",
                                  base_url="http://127.0.0.1:9", **settings.client_tuning())
    assert client_options(resource) == settings.client_options()
    with resource.client() as client:
        assert client.options == settings.client_options()
    with resource.client(requests_per_second=3.0) as client:
        assert client.options == dataclasses.replace(settings.client_options(),
                                                     requests_per_second=3.0)


def test_the_reader_process_gets_the_same_options_reading_in_its_own_threads():
    options = load_settings(TUNED).client_options()
    sent = json.loads(json.dumps(options.for_child()))  # the job goes to the child as JSON
    assert ClientOptions(**sent) == dataclasses.replace(options, reader_process=False)


def test_options_are_checked_when_built():
    with pytest.raises(ValueError, match="page_size must be 1..1000"):
        ClientOptions(page_size=1001)
    with pytest.raises(ValueError, match="reader_process must be"):
        ClientOptions(reader_process="sometimes")
    clamped = ClientOptions(concurrency=0, max_attempts=-2)
    assert (clamped.concurrency, clamped.max_attempts, clamped.max_threads) == (1, 1, 4)
    client = TaskRouterClient(choose_credentials("AC" + "0" * 32, "token"), "http://127.0.0.1:9/",
                              clamped)
    assert (client.base_url, client.concurrency, client.page_size) == (
        "http://127.0.0.1:9", 1, 1000)


def test_bad_shard_settings_fail_with_the_other_settings():
    with pytest.raises(SettingsError) as caught:
        load_settings({"SYNC_SHARDS": "many", "SYNC_SHARD_RETRIES": "-1",
                       "TASKROUTER_PAGE_SIZE": "0"})
    message = str(caught.value)
    for name in ("SYNC_SHARDS='many'", "SYNC_SHARD_RETRIES='-1'", "TASKROUTER_PAGE_SIZE='0'"):
        assert name in message
    assert message.count("\n  - ") == 3


def test_shard_settings_and_their_defaults():
    assert (load_settings({}).sync_shards, load_settings({}).shard_retries) == (1, 1)
    settings = load_settings({"SYNC_SHARDS": "1000", "SYNC_SHARD_RETRIES": "0"})
    assert (settings.sync_shards, settings.shard_retries) == (256, 0)
    assert shard_count({"SYNC_SHARDS": " 4 "}) == 4 and shard_count({}) == 1
    with pytest.raises(SettingsError, match="SYNC_SHARDS='0'"):
        shard_count({"SYNC_SHARDS": "0"})
    assert shard_retry_policy(0) is None
    policy = shard_retry_policy(2)
    assert policy is not None and policy.max_retries == 2
