"""Redirect rules and the time budget of the OTA client's transport, without a network."""
from __future__ import annotations

import io
from email.message import Message

import pytest

from modelmake.client import DownloadError, Limits
from modelmake.client.transport import Budget, BudgetedRequest, TooSlow, _RedirectHandler


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Opener:
    def __init__(self):
        self.opened: list = []

    def open(self, request, timeout=None):
        self.opened.append(request)
        return request


def redirect(origin: str, location: str):
    request = BudgetedRequest(origin, Budget(origin, deadline=10, min_rate=0, period=1), {"Range": "bytes=5-"})
    request.timeout = 1
    headers = Message()
    headers["Location"] = location
    handler = _RedirectHandler()
    handler.parent = Opener()  # type: ignore[assignment]
    return handler.http_error_302(request, io.BytesIO(), 302, "Found", headers)


def test_a_redirect_from_https_down_to_http_is_refused():
    with pytest.raises(DownloadError, match=r"^https://models.example/index.json redirects to http://models.example/index.json, "
                                            r"from https:// down to plain http://\."):
        redirect("https://models.example/index.json", "http://models.example/index.json")


def test_a_followed_redirect_keeps_the_budget_and_the_range():
    followed = redirect("http://models.example/blob", "https://cdn.example/blob")
    assert followed.full_url == "https://cdn.example/blob"
    assert isinstance(followed, BudgetedRequest) and followed.budget.url == "http://models.example/blob"
    assert followed.get_header("Range") == "bytes=5-"


def test_the_budget_measures_the_rate_per_period_and_ends_at_the_deadline():
    clock = Clock()
    budget = Budget("u", deadline=10, min_rate=100, period=2, clock=clock)
    assert budget.check() == 2  # a read may wait until the end of the period
    budget.received(200)
    clock.now = 2.0
    assert budget.check() == 2  # 200 bytes in 2 s is the minimum: a new period begins
    budget.received(199)
    clock.now = 4.5
    with pytest.raises(TooSlow, match=r"^the server sent 199 bytes in 2.5 s, below the minimum rate of 100 bytes/s$"):
        budget.check()
    clock.now = 9.0
    budget.start_period()  # the next attempt
    clock.now = 9.5
    assert budget.check() == pytest.approx(0.5)  # the deadline is nearer than the end of the period
    budget.received(1)
    clock.now = 10.0
    with pytest.raises(DownloadError, match=r"^u did not download within the deadline of 10 s\."):
        budget.check()


def test_a_period_without_a_byte_fails_even_without_a_minimum_rate():
    clock = Clock()
    budget = Budget("u", deadline=10, min_rate=0, period=2, clock=clock)
    clock.now = 2.0
    with pytest.raises(TooSlow, match=r"^the server sent nothing for 2.0 s$"):
        budget.check()


def test_limits_refuse_a_deadline_or_rate_that_cannot_work():
    with pytest.raises(ValueError, match="deadline > 0 and min_rate >= 0"):
        Limits(deadline=0)
    with pytest.raises(ValueError, match="deadline > 0 and min_rate >= 0"):
        Limits(min_rate=-1)
