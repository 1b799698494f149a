"""A Redis store's connection: its URL and options, the bounded connection pool, the key names, and the
one place where redis-py's errors become augury's.

URLs: ``redis://[[user]:password@]host:port/db``, ``rediss://...`` (TLS) and ``unix:///path/redis.sock?db=N``,
with augury's options in the query string beside redis-py's own (``db``, ``ssl_*``, ``client_name``):

=====================  =========  ============================================================================
option                 default    what
=====================  =========  ============================================================================
``prefix``             augury     every key of the store starts with ``<prefix>:`` (many stores in one db)
``max_connections``    16         connections per pool (blocks past it; invariant 8): the blocking client's,
                                  and the asyncio client's a server awaits lookups on (`connect_async`)
``pool_timeout_s``     2          how long a call waits for a free connection before it is `StoreUnavailable`
``socket_timeout_s``   2          how long one command may take before it is `StoreUnavailable`
``connect_timeout_s``  1          how long a connection attempt may take
``lease_s``            15         how long a publish that stopped heartbeating is still taken as alive
``poll_s``             1          a reader re-reads the active pointer at least this often (besides pub/sub)
=====================  =========  ============================================================================

Errors (`translated`): a refused or lost connection, a timeout, no free connection or a server still
loading its data are `StoreUnavailable` (retry later); a refused login or server certificate, a wrong
type at a key, a script error or a corrupt record are `StoreBroken` (retrying will not help). A
password never appears in `url` or a message.
"""

from __future__ import annotations

import math
import re
import ssl
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import msgspec

from augury.errors import ConfigError, StoreBroken, StoreUnavailable

try:
    import redis
    import redis.asyncio
except ImportError as exc:  # pragma: no cover - the extra is part of `all` and `test`
    raise ConfigError("Redis prediction stores need the 'redis' package: "
                      "pip install 'augury[redis]'") from exc

#: augury's own URL options and their defaults (see the module docstring).
DEFAULTS: dict[str, Any] = {"prefix": "augury", "max_connections": 16, "pool_timeout_s": 2.0,
                            "socket_timeout_s": 2.0, "connect_timeout_s": 1.0, "lease_s": 15.0, "poll_s": 1.0}
#: query options redis-py itself reads from a URL (passed on to it).
REDIS_PY_OPTIONS = frozenset({"db", "ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile",
                              "ssl_check_hostname", "ssl_ca_path", "client_name", "health_check_interval"})
_PREFIX = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True)
class Options:
    prefix: str
    max_connections: int
    pool_timeout_s: float
    socket_timeout_s: float
    connect_timeout_s: float
    lease_s: float
    poll_s: float


def parse(url: str, options: dict[str, Any]) -> tuple[str, str, Options]:
    """`url` split into what redis-py connects to, the URL to show (password hidden) and augury's
    options (from the query string and `options`; a name given twice is a ConfigError)."""
    parts = urllib.parse.urlsplit(url)
    try:
        pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise ConfigError(f"bad query string in store URL '{_hidden(parts)}': {exc}") from None
    ours = dict(options)
    theirs = []
    for name, value in pairs:
        if name in REDIS_PY_OPTIONS:
            theirs.append((name, value))
        elif name in ours:
            raise ConfigError(f"store option {name} is given twice (in the URL or as an argument)")
        else:
            ours[name] = value
    unknown = sorted(set(ours) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown Redis store option(s) {unknown}; known: {sorted(DEFAULTS)} and "
                          f"redis-py's {sorted(REDIS_PY_OPTIONS)}")
    if parts.scheme != "unix" and not parts.hostname:
        raise ConfigError(f"bad Redis store URL '{_hidden(parts)}': use redis://host:port/db, rediss://... "
                          "or unix:///path/to/redis.sock")
    query = urllib.parse.urlencode(theirs)
    connect = f"{parts.scheme}://{parts.netloc}{parts.path}" + (f"?{query}" if query else "")
    shown = f"{parts.scheme}://{_netloc(parts)}{parts.path}" + (f"?{parts.query}" if parts.query else "")
    return connect, shown, _checked({**DEFAULTS, **ours})


def _netloc(parts: urllib.parse.SplitResult) -> str:
    if parts.password is None:
        return parts.netloc
    return f"{parts.username or ''}:***@" + parts.netloc.rpartition("@")[2]


def _hidden(parts: urllib.parse.SplitResult) -> str:
    return f"{parts.scheme}://{_netloc(parts)}{parts.path}"


def _checked(values: dict[str, Any]) -> Options:
    prefix = str(values["prefix"])
    if not _PREFIX.fullmatch(prefix):
        raise ConfigError(f"Redis store option prefix={prefix!r} must be 1-64 letters, digits, '_', '.' "
                          "or '-'")
    out: dict[str, Any] = {"prefix": prefix}
    for name in DEFAULTS:
        if name == "prefix":
            continue
        value = values[name]
        kind = int if name == "max_connections" else float
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"Redis store option {name}={value!r} is not a number") from None
        if isinstance(value, bool) or not math.isfinite(number) or number <= 0:
            raise ConfigError(f"Redis store option {name} must be a positive number, not {value!r}")
        out[name] = number
    return Options(**out)


def connect(url: str, opts: Options) -> redis.Redis:
    """A client over a bounded, blocking connection pool (callers past `max_connections` wait up to
    `pool_timeout_s`). Connecting is lazy: nothing is sent until the first command."""
    try:
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=opts.max_connections, timeout=opts.pool_timeout_s,
            socket_timeout=opts.socket_timeout_s, socket_connect_timeout=opts.connect_timeout_s,
            **({} if url.startswith("unix:") else {"socket_keepalive": True}))
    except ValueError as exc:  # (redis-py's words on a bad URL or URL option)
        raise ConfigError(f"bad Redis store URL: {exc}") from exc
    return redis.Redis(connection_pool=pool)


def connect_async(url: str, opts: Options) -> redis.asyncio.Redis:
    """`connect`'s asyncio twin, with its own pool of the same bound and timeouts: lookups awaited on a
    server's event loop (`redis_read.Reader.aget_many`). Its connections belong to the loop that first
    uses them; connecting is lazy as well."""
    try:
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url, max_connections=opts.max_connections, timeout=opts.pool_timeout_s,
            socket_timeout=opts.socket_timeout_s, socket_connect_timeout=opts.connect_timeout_s,
            **({} if url.startswith("unix:") else {"socket_keepalive": True}))
    except ValueError as exc:
        raise ConfigError(f"bad Redis store URL: {exc}") from exc
    return redis.asyncio.Redis.from_pool(pool)  # (its `aclose` closes the pool too)


@contextmanager
def translated(url: str, doing: str) -> Iterator[None]:
    """redis-py's (and a corrupt record's) errors as augury's, named with the store and what it was doing."""
    try:
        yield
    except redis.AuthenticationError as exc:  # (a ConnectionError, but retrying will not help)
        raise StoreBroken(f"prediction store {url}: {doing} was refused: {exc}") from exc
    except redis.ConnectionError as exc:
        if isinstance(exc.__cause__, ssl.SSLCertVerificationError):  # (retrying will not help either)
            raise StoreBroken(f"prediction store {url}: {doing} was refused: {exc}") from exc
        raise StoreUnavailable(f"prediction store {url} cannot be reached ({doing}): {exc}") from exc
    except redis.TimeoutError as exc:  # (BusyLoadingError is a ConnectionError: above)
        raise StoreUnavailable(f"prediction store {url} cannot be reached ({doing}): {exc}") from exc
    except redis.RedisError as exc:
        raise StoreBroken(f"prediction store {url}: {doing} failed: {exc}") from exc
    except (msgspec.DecodeError, ValueError, TypeError) as exc:  # (a record of another layout)
        raise StoreBroken(f"prediction store {url}: {doing} read a corrupt record: {exc!r}") from exc


@dataclass(frozen=True)
class Keys:
    """The names of a store's keys, all under ``<prefix>:``. Predictions are one string key each, in their
    version's namespace, so a version is deleted by SCAN + UNLINK and many keys are read by one MGET."""

    prefix: str

    @property
    def counter(self) -> str:
        """INCR gives the next version number (never reused)."""
        return f"{self.prefix}:next"

    @property
    def pointer(self) -> str:
        """The active version's number."""
        return f"{self.prefix}:active"

    @property
    def versions(self) -> str:
        """The set of version numbers that have a record."""
        return f"{self.prefix}:versions"

    @property
    def channel(self) -> str:
        """Pub/sub: a message each time the pointer is switched."""
        return f"{self.prefix}:activated"

    def meta(self, number: int | str) -> str:
        return f"{self.prefix}:meta:{number}"

    def lease(self, number: int | str) -> str:
        return f"{self.prefix}:lease:{number}"

    def namespace(self, number: int | str) -> str:
        """The beginning of every prediction key of version `number`."""
        return f"{self.prefix}:v:{number}:"

    @property
    def all_predictions(self) -> str:
        """A SCAN pattern matching every version's prediction keys (the prefix has no glob characters)."""
        return f"{self.prefix}:v:*"

    def number_of(self, key: bytes) -> str:
        """The version number in a prediction key's name."""
        return key[len(self.prefix) + 3:].split(b":", 1)[0].decode()

    def written_back(self, model_version: str) -> str:
        """The beginning of the write-back keys of `model_version` (its length first, so that no model
        version and key can make another's key)."""
        return f"{self.prefix}:wb:{len(model_version)}:{model_version}:"
