"""Fetching over HTTP(S): the capped index fetch and the resumable, verified blob download (OTA.md, step 1 and "Downloading").

Every read is bounded by what the signed index (or the index limit) allows, so a hostile
or broken server can waste at most one byte of the device's data and storage beyond it,
and by time: each fetch has a deadline and a minimum rate (transport.py), so it cannot
waste the device's time either. Network failures are retried; a file that turns out
wrong is not (the server would only send the same wrong bytes again).
"""
from __future__ import annotations

import hashlib
import os
import re
import ssl
import time
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import TypeVar

from .errors import BlobMismatchError, DownloadError, OversizedResponseError
from .transport import Budget, BudgetedRequest, TooSlow, build_opener

T = TypeVar("T")

CHUNK = 1 << 16
USER_AGENT = "modelmake-client/1"
_RETRY_STATUSES = {408, 416, 425, 429}  # and every 5xx
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


@dataclass(frozen=True)
class Limits:
    """What one update may spend on the network (OTA.md, "Client limits")."""

    max_index_bytes: int = 8 << 20
    attempts: int = 3  # per file, counting the first
    timeout: float = 30.0  # seconds to connect, and the period over which min_rate is measured
    backoff: float = 1.0  # seconds before the second attempt, doubling for each one after
    deadline: float = 600.0  # seconds for one file, all attempts included; a blob resumes at the next update
    min_rate: int = 1024  # bytes per second, averaged over each period of `timeout` seconds; 0: no minimum

    def __post_init__(self) -> None:
        if (self.attempts < 1 or self.max_index_bytes < 1 or self.timeout <= 0 or self.backoff < 0
                or self.deadline <= 0 or self.min_rate < 0):
            raise ValueError(f"{self} needs attempts >= 1, max_index_bytes >= 1, timeout > 0, backoff >= 0, "
                             "deadline > 0 and min_rate >= 0")


class _Retry(Exception):
    """A failure worth another attempt: the connection broke, timed out or the server was busy."""

    def __init__(self, reason: str, status: int | None = None):
        super().__init__(reason)
        self.status = status


class Downloader:
    def __init__(self, limits: Limits = Limits(), *, ssl_context: ssl.SSLContext | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.limits = limits
        self._opener = build_opener(ssl_context)
        self._sleep = sleep

    def fetch_index(self, url: str) -> bytes:
        """The bytes of index.json, at most ``max_index_bytes`` of them."""
        limit = self.limits.max_index_bytes

        def attempt(budget: Budget) -> bytes:
            with self._open(url, budget, {}) as response:
                declared = _content_length(response)
                if declared is not None and declared > limit:
                    raise OversizedResponseError(f"{url} announced {declared} bytes, more than the index limit of {limit}")
                data = bytearray()
                while len(data) <= limit and (chunk := response.read(min(CHUNK, limit + 1 - len(data)))):
                    data += chunk
                if len(data) > limit:
                    raise OversizedResponseError(f"{url} sent more than the index limit of {limit} bytes")
                if declared is not None and len(data) < declared:
                    raise _Retry(f"the connection ended after {len(data)} of {declared} bytes")
                return bytes(data)

        return self._retrying(url, attempt)

    def fetch_blob(self, url: str, partial: Path, *, size: int, sha256: str) -> Path:
        """Download ``url`` into ``partial`` until it holds the ``size`` bytes whose SHA-256 is ``sha256``.

        Bytes already in ``partial`` (from an interrupted attempt, even by an earlier run of
        the app) are kept and the rest is asked for with a Range request. The file is
        fsynced, so it can be renamed into place as it is.
        """
        partial.parent.mkdir(parents=True, exist_ok=True)

        def attempt(budget: Budget) -> Path:
            have = partial.stat().st_size if partial.exists() else 0
            if have >= size:  # complete but not verified (interrupted), or longer than it can be: start over
                have = 0
            try:
                response = self._open(url, budget, {"Range": f"bytes={have}-"} if have else {})
            except _Retry as error:
                if error.status == 416:  # the server will not serve the range we hold: start over next time
                    partial.unlink(missing_ok=True)
                raise
            with response:
                if response.status == 206 and have and _range_start(response, size) == have:
                    mode = "ab"  # the server continues where the partial file ends
                elif response.status == 200:
                    have, mode = 0, "wb"  # the whole file: start over
                else:
                    partial.unlink(missing_ok=True)
                    raise _Retry(f"unexpected answer to a request for bytes {have}-: HTTP {response.status}, "
                                 f"Content-Range {response.headers.get('Content-Range')!r}")
                declared = _content_length(response)
                if declared is not None and declared > size - have:
                    partial.unlink(missing_ok=True)
                    raise OversizedResponseError(f"{url} announced {declared} bytes from offset {have}, but the file has {size}")
                digest = _hash_prefix(partial, have)
                with open(partial, mode) as out:
                    remaining = size - have
                    while remaining:
                        chunk = response.read1(min(CHUNK, remaining))  # what has arrived: kept if the next read fails
                        if not chunk:
                            raise _Retry(f"the connection ended after {size - remaining} of {size} bytes")
                        out.write(chunk)
                        digest.update(chunk)
                        remaining -= len(chunk)
                    # One more byte tells a server that stops from one that keeps sending (endless data).
                    if response.read(1):
                        out.close()
                        partial.unlink(missing_ok=True)
                        raise OversizedResponseError(f"{url} sent more than the {size} bytes the index declares")
                    out.flush()
                    os.fsync(out.fileno())
            if digest.hexdigest() != sha256:
                partial.unlink(missing_ok=True)
                raise BlobMismatchError(f"{url} has SHA-256 {digest.hexdigest()}, but the signed index names {sha256}")
            return partial

        return self._retrying(url, attempt)

    def _open(self, url: str, budget: Budget, headers: dict[str, str]):
        request = BudgetedRequest(url, budget, {"User-Agent": USER_AGENT, **headers})
        try:
            return self._opener.open(request, timeout=max(min(self.limits.timeout, budget.remaining()), 0.001))
        except urllib.error.HTTPError as error:
            error.close()
            if error.code in _RETRY_STATUSES or error.code >= 500:
                raise _Retry(f"HTTP {error.code} {error.reason}", error.code) from None
            raise DownloadError(f"{url} answered HTTP {error.code} {error.reason}") from None

    def _retrying(self, url: str, attempt: Callable[[Budget], T]) -> T:
        limits = self.limits
        budget = Budget(url, deadline=limits.deadline, min_rate=limits.min_rate, period=limits.timeout)
        for number in range(1, limits.attempts + 1):
            try:
                return attempt(budget)
            except (_Retry, TooSlow, OSError, HTTPException) as error:  # OSError covers URLError, resets and timeouts
                failure = error
            if number < limits.attempts:
                pause = limits.backoff * 2 ** (number - 1)
                if pause >= budget.remaining():
                    raise DownloadError(f"{url} did not download within the deadline of {limits.deadline:g} s; "
                                        f"the last of {number} attempts failed with: {failure}")
                self._sleep(pause)
        raise DownloadError(f"{url} could not be downloaded in {self.limits.attempts} attempts; the last failed with: {failure}")


def _content_length(response) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value is not None and value.strip().isdigit() else None


def _range_start(response, size: int) -> int | None:
    """Where a 206 answer starts, if it runs to the end of a file of ``size`` bytes."""
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    if not match or int(match[2]) != size - 1 or match[3] not in ("*", str(size)):
        return None
    return int(match[1])


def _hash_prefix(path: Path, length: int):
    digest = hashlib.sha256()
    if length:
        with open(path, "rb") as f:
            while length and (chunk := f.read(min(CHUNK, length))):
                digest.update(chunk)
                length -= len(chunk)
    return digest
