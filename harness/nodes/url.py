"""The one parser of node URLs (``[tool.shadowtest.nodes.<name>] url = ...``).

Every target reads its URL here, with the query keys it declares (``URL_KEYS`` of each
target: key -> what it means). The rules are the same for every scheme:

- the scheme must be the target's (``docker://`` for the docker target ...);
- a query key the target does not declare is an error naming the node, the key, the keys
  expected and how to fix it (a typo such as ``?kye=`` never silently loses the key);
- a key is given once, with a value (``?key=`` or ``?key=a&key=b`` is an error);
- a port, when there is one, is a number 1-65535.

What a value means (a path, a number, one of a few words) is the target's to check, with
:func:`url_error` so that every message has the same shape: where (node and URL), what,
expected, got, and how to fix it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from harness.core.errors import ConfigError


@dataclass(frozen=True)
class NodeUrl:
    """A node URL split into its parts; ``options`` holds the query, one value per key
    (percent-decoded)."""

    node: str
    url: str
    scheme: str
    netloc: str = ""
    hostname: str = ""
    username: str | None = None
    port: int | None = None
    path: str = ""
    options: Mapping[str, str] = field(default_factory=dict)

    def error(self, what: str, expected: str, got: str, fix: str = "",
              key: str | None = None) -> ConfigError:
        """A ConfigError about this URL (see :func:`url_error`)."""
        return url_error(self.node, self.url, what, expected, got, fix, key)


def url_error(node: str, url: str, what: str, expected: str, got: str, fix: str = "",
              key: str | None = None) -> ConfigError:
    """``node 'n': url 'x': <what>: expected <expected>, got <got>[; <fix>]``."""
    return ConfigError(f"node {node!r}: url {url!r}: {what}: expected {expected}, got {got}"
                       + (f"; {fix}" if fix else ""), key=key)


def describe_keys(keys: Mapping[str, str]) -> str:
    """``key= (what it means), ...`` or 'no query keys' for a scheme that takes none."""
    if not keys:
        return "no query keys"
    return "one of " + ", ".join(f"{k}= ({v})" for k, v in keys.items())


def parse_node_url(node: str, url: str, scheme: str, keys: Mapping[str, str],
                   usage: str) -> NodeUrl:
    """Split ``url`` of ``node`` for the target of ``scheme`` whose query keys are ``keys``
    (key -> what it means). ``usage``: the URL's documented forms, for the messages.

    Raises ConfigError (where, what, expected, got, how to fix) for another scheme, an
    unknown, repeated or empty query key, or a port that is not a number 1-65535."""
    parts = urlsplit(url)
    if parts.scheme != scheme:
        raise url_error(node, url, f"not a {scheme}:// URL", usage,
                        f"{parts.scheme + '://' if parts.scheme else 'no scheme'}")
    query = parse_qs(parts.query, keep_blank_values=True)
    options: dict[str, str] = {}
    for key, given in query.items():
        if key not in keys:
            near = [k for k in keys if _near(key, k)]
            fix = (f"did you mean {near[0]}=? " if near else "") + (
                f"use only these keys, or drop {key}=" if keys else
                f"{scheme}:// takes no query: drop ?{parts.query}")
            raise url_error(node, url, f"unknown query key {key!r}", describe_keys(keys),
                            f"{key}={given[0]}", fix, key=key)
        if len(given) != 1:
            raise url_error(node, url, f"{key}= given {len(given)} times", f"{key}= once",
                            " ".join(f"{key}={g}" for g in given), "keep one of them", key=key)
        if not given[0]:
            raise url_error(node, url, f"{key}= has no value", f"{key}=<{keys[key]}>",
                            f"{key}=", f"give a value or drop {key}=", key=key)
        options[key] = unquote(given[0])
    try:
        port = parts.port
    except ValueError as exc:
        raise url_error(node, url, "bad port", "a port number 1-65535 after the host, e.g. "
                        f"{scheme}://host:2222", str(exc)) from None
    return NodeUrl(node=node, url=url, scheme=scheme, netloc=parts.netloc,
                   hostname=unquote(parts.hostname or ""),
                   username=unquote(parts.username) if parts.username else None, port=port,
                   path=parts.path, options=options)


def _near(given: str, known: str) -> bool:
    """``given`` is one edit (or a swap of neighbours) away from ``known``: a likely typo."""
    if given == known:
        return True
    if abs(len(given) - len(known)) > 1:
        return False
    if len(given) == len(known):
        diff = [i for i, (a, b) in enumerate(zip(given, known, strict=True)) if a != b]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1
                                  and given[diff[0]] == known[diff[1]]
                                  and given[diff[1]] == known[diff[0]])
    short, long_ = sorted((given, known), key=len)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))
