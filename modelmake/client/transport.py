"""HTTP(S) connections whose every read is bounded in time, and redirects that stay on HTTP(S).

A socket timeout bounds only the wait for the next byte, so a server that sends one byte
just before each timeout keeps a download alive for as long as it likes (a slow-loris).
Here every read of a fetch, from the response's status line to its last byte, goes through
one ``Budget``: it fails when the fetch's deadline passes, and when a period of ``timeout``
seconds brings fewer than ``min_rate * timeout`` bytes. (Kotlin: OkHttp's ``callTimeout``
plus a counting ``Source``; Swift: ``timeoutIntervalForResource`` plus a delegate that
counts bytes and cancels.)
"""
from __future__ import annotations

import functools
import http.client
import io
import socket
import ssl
import time
import urllib.parse
import urllib.request
from collections.abc import Callable

from .errors import DownloadError

ALLOWED_SCHEMES = ("http", "https")


class TooSlow(Exception):
    """The server sent less than the minimum rate over one period: worth another attempt within the deadline."""


class Budget:
    """The time and progress allowed to one fetch (all its attempts): a deadline and a minimum rate."""

    def __init__(self, url: str, *, deadline: float, min_rate: int, period: float,
                 clock: Callable[[], float] = time.monotonic):
        self.url, self.deadline, self.min_rate, self.period, self._clock = url, deadline, min_rate, period, clock
        self._ends = clock() + deadline
        self.start_period()

    def start_period(self) -> None:
        """Begin measuring the rate afresh (a new connection, or the next period)."""
        self._period_start, self._period_bytes = self._clock(), 0

    def remaining(self) -> float:
        return self._ends - self._clock()

    def check(self) -> float:
        """Raise if the deadline has passed or the last period was too slow; return how long the next read may wait."""
        now = self._clock()
        if now >= self._ends:
            raise DownloadError(f"{self.url} did not download within the deadline of {self.deadline:g} s")
        if now - self._period_start >= self.period:
            elapsed = now - self._period_start
            if not self._period_bytes:
                raise TooSlow(f"the server sent nothing for {elapsed:.1f} s")
            if self._period_bytes < self.min_rate * self.period:
                raise TooSlow(f"the server sent {self._period_bytes} bytes in {elapsed:.1f} s, "
                              f"below the minimum rate of {self.min_rate} bytes/s")
            self.start_period()
        return min(self._ends, self._period_start + self.period) - now

    def received(self, count: int) -> None:
        self._period_bytes += count


class _BudgetedReader(io.RawIOBase):
    """The raw stream under an HTTP response: each receive waits at most until the budget's next check."""

    def __init__(self, sock: socket.socket, budget: Budget):
        self._sock, self._budget = sock, budget
        # Holds the socket open until this reader closes, as socket.makefile does (urllib closes the socket itself).
        self._hold = sock.makefile("rb", buffering=0)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._hold.close()
        super().close()

    def readinto(self, buffer) -> int:
        while True:
            self._sock.settimeout(max(self._budget.check(), 0.001))
            try:
                count = self._sock.recv_into(buffer)
            except TimeoutError:
                continue  # the budget decides whether waiting longer is allowed
            self._budget.received(count)
            return count


class _BudgetedSocket:
    """A connected socket whose responses are read through the budget; everything else goes to the socket."""

    def __init__(self, sock: socket.socket, budget: Budget):
        self._sock, self._budget = sock, budget

    def makefile(self, mode: str = "r", *args, **kwargs):
        return io.BufferedReader(_BudgetedReader(self._sock, self._budget))

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


class _BudgetedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args, budget: Budget, **kwargs):
        super().__init__(*args, **kwargs)
        self._budget = budget

    def connect(self) -> None:
        super().connect()
        self._budget.start_period()
        self.sock = _BudgetedSocket(self.sock, self._budget)


class _BudgetedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args, budget: Budget, **kwargs):
        super().__init__(*args, **kwargs)
        self._budget = budget

    def connect(self) -> None:
        super().connect()  # TCP and the TLS handshake, each bounded by the socket timeout
        self._budget.start_period()
        self.sock = _BudgetedSocket(self.sock, self._budget)


class BudgetedRequest(urllib.request.Request):
    def __init__(self, url: str, budget: Budget, headers: dict[str, str]):
        super().__init__(url, headers=headers)
        self.budget = budget


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(functools.partial(_BudgetedHTTPConnection, budget=req.budget), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, ssl_context: ssl.SSLContext | None):
        super().__init__(context=ssl_context)
        self.ssl_context = ssl_context  # None: the system's trusted certificates, and the host name checked

    def https_open(self, req):
        return self.do_open(functools.partial(_BudgetedHTTPSConnection, budget=req.budget), req, context=self.ssl_context)


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) only, never from https down to http, and keep the fetch's budget."""

    def http_error_302(self, req, fp, code, msg, headers):
        location = headers.get("location") or headers.get("uri")
        if location is not None:
            target = urllib.parse.urljoin(req.full_url, location)
            scheme = urllib.parse.urlsplit(target).scheme.lower()
            downgrade = urllib.parse.urlsplit(req.full_url).scheme.lower() == "https" and scheme == "http"
            if scheme not in ALLOWED_SCHEMES or downgrade:
                fp.close()
                raise DownloadError(f"{req.full_url} redirects to {target}, " + (
                    "from https:// down to plain http://" if downgrade else "which is not an http:// or https:// URL"))
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            new = BudgetedRequest(new.full_url, req.budget, dict(new.header_items()))
        return new


def build_opener(ssl_context: ssl.SSLContext | None = None) -> urllib.request.OpenerDirector:
    """An opener for ``BudgetedRequest``s (proxies from the environment, as urllib's own)."""
    return urllib.request.build_opener(_HTTPHandler, _HTTPSHandler(ssl_context), _RedirectHandler)
