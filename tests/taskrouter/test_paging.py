"""Paging and its guards on fake bodies, no HTTP (``pipelines.taskrouter.paging``).

A list page names its list in ``meta.key``; its ``next_page_url`` is followed as given, but only
on the configured origin and never back to a page already read.
"""

from __future__ import annotations

import pytest

from pipelines.taskrouter.errors import TaskRouterBadPage, UnsafeNextPageUrl
from pipelines.taskrouter.paging import (
    PageFollower,
    check_same_origin,
    direct_prefix,
    lenient_json,
    origin,
    parse_body,
    unwrap_page,
)
from pipelines.taskrouter.retry import BodyFault

BASE = "https://taskrouter.example.com"
PATH = "/v1/Workspaces/WS1/Workers"


def page(records: list[dict[str, object]], next_url: object = None, key: object = "workers"
         ) -> dict[str, object]:
    return {"meta": {"key": key, "next_page_url": next_url, "page_size": 2}, "workers": records}


def follow(bodies: dict[str, dict[str, object]], first: str) -> list[list[dict[str, object]]]:
    """The client's paging loop over canned bodies: what ``iter_pages`` yields."""
    pages, url, seen = PageFollower(BASE, PATH), first, []
    while url:
        records, url = pages.take(url, bodies[url])
        pages.check_next(url)
        seen.append(records)
    return seen


def test_pages_are_followed_by_next_page_url_as_given():
    second = f"{BASE}{PATH}?PageSize=2&Page=1&PageToken=PAabc"
    bodies = {f"{BASE}{PATH}?PageSize=2": page([{"sid": "WK1"}, {"sid": "WK2"}], second),
              second: page([{"sid": "WK3"}])}
    assert follow(bodies, f"{BASE}{PATH}?PageSize=2") == [[{"sid": "WK1"}, {"sid": "WK2"}],
                                                          [{"sid": "WK3"}]]


@pytest.mark.parametrize("body", [
    {}, {"meta": None, "workers": []}, {"meta": {"key": "workers"}}, {"meta": {"key": 3}},
    {"meta": {"key": "workers"}, "workers": {"sid": "WK1"}},
    {"meta": {"key": "tasks"}, "workers": []},
], ids=["empty", "meta-null", "list-missing", "key-not-text", "list-not-a-list", "wrong-key"])
def test_a_page_without_its_list_is_refused(body):
    with pytest.raises(TaskRouterBadPage, match="without a 'meta.key' list") as caught:
        unwrap_page(body, PATH)
    assert caught.value.path == PATH and caught.value.fault == "bad_page"


@pytest.mark.parametrize("next_url", [7, ["x"], {"u": 1}, True])
def test_a_next_page_url_that_is_not_text_is_refused(next_url):
    with pytest.raises(TaskRouterBadPage, match="neither a URL nor null"):
        unwrap_page(page([], next_url), PATH)


@pytest.mark.parametrize("next_url", [None, ""])
def test_null_or_empty_next_page_url_ends_the_list(next_url):
    assert unwrap_page(page([{"sid": "WK1"}], next_url), PATH) == ([{"sid": "WK1"}], None)


def test_a_page_pointing_back_is_refused_before_it_is_read_again():
    first = f"{BASE}{PATH}?PageSize=2"
    second = f"{BASE}{PATH}?PageSize=2&PageToken=PA2"
    bodies = {first: page([{"sid": "WK1"}], second), second: page([{"sid": "WK2"}], first)}
    with pytest.raises(TaskRouterBadPage, match=r"repeats a page already read \(after 2 page"):
        follow(bodies, first)
    loop = {first: page([{"sid": "WK1"}], first)}  # a page naming itself
    with pytest.raises(TaskRouterBadPage, match=r"after 1 page"):
        follow(loop, first)


@pytest.mark.parametrize("elsewhere", [
    "https://evil.example/v1/Workspaces/WS1/Workers?PageToken=PA2",
    "http://taskrouter.example.com/v1/Workspaces/WS1/Workers",  # another scheme
    "https://taskrouter.example.com:8443/v1/Workspaces/WS1/Workers",  # another port
])
def test_a_next_page_on_another_origin_is_refused(elsewhere):
    first = f"{BASE}{PATH}?PageSize=2"
    with pytest.raises(UnsafeNextPageUrl, match="Refusing to follow a URL on") as caught:
        follow({first: page([{"sid": "WK1"}], elsewhere)}, first)
    assert "only https://taskrouter.example.com (TASKROUTER_BASE_URL)" in str(caught.value)


def test_another_spelling_of_the_same_origin_is_followed():
    first = f"{BASE}{PATH}?PageSize=2"
    other = f"HTTPS://TaskRouter.Example.com:443{PATH}?PageToken=PA2"
    assert follow({first: page([{"sid": "WK1"}], other), other: page([])}, first) == [
        [{"sid": "WK1"}], []]


@pytest.mark.parametrize("next_url", ["/v1/relative?PageToken=PA2", "ftp://h/x",
                                      "https://h:99999/x"])
def test_a_next_page_url_that_cannot_be_followed_is_refused(next_url):
    with pytest.raises(TaskRouterBadPage, match="cannot be followed"):
        check_same_origin(next_url, BASE, PATH)


def test_origins_and_the_direct_prefix():
    assert origin("https://H.example/x") == ("https", "h.example", 443)
    assert origin("http://h:8080") == ("http", "h", 8080)
    assert direct_prefix("http://127.0.0.1:5000") == "http://127.0.0.1:5000/"
    assert direct_prefix("http://h/api?x=1") is None


def test_a_lone_surrogate_orjson_refuses_is_read_by_the_standard_library():
    # an emoji cut in half: an escaped lone surrogate, which no database driver can encode
    assert parse_body(b'{"meta": {"key": "w"}, "w": [{"name": "a\\ud83d"}]}') == {
        "meta": {"key": "w"}, "w": [{"name": "a\ufffd"}]}


@pytest.mark.parametrize(("content", "fault"), [
    (b'{"meta": {"key": "w"}, "w": [', "bad_json"), (b"", "bad_json"), (b"<html>", "bad_json"),
    (b"[1, 2]", "not_object"), (b'"text"', "not_object"), (b"null", "not_object"),
])
def test_a_body_that_is_no_json_object_is_a_body_fault(content, fault):
    with pytest.raises(BodyFault) as caught:
        parse_body(content)
    assert caught.value.fault == fault
    if fault == "bad_json":
        with pytest.raises(BodyFault):
            lenient_json(content)
