"""The one node-URL parser (harness/nodes/url.py) and every target reading its URL with it:
the same strictness for every scheme, a typo'd key is an error naming the node, the key,
the keys expected and the fix."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from harness.core.errors import ConfigError
from harness.nodes.url import describe_keys, parse_node_url
from harness.targets.base import Target, build_target
from harness.targets.docker import URL_KEYS as DOCKER_KEYS
from harness.targets.docker import DockerTarget
from harness.targets.kubernetes import URL_KEYS as KUBE_KEYS
from harness.targets.kubernetes import KubernetesTarget
from harness.targets.local import LocalTarget
from harness.targets.ssh import URL_KEYS as SSH_KEYS
from harness.targets.ssh import VM_URL_KEYS, SshTarget, VmTarget

KEYS = {"key": "the private key", "known_hosts": "a known_hosts file"}


def test_parse_splits_the_url_and_decodes_the_query() -> None:
    url = parse_node_url("n", "ssh://ro%40t@Host.example:2222/x?key=/a%20b", "ssh", KEYS, "ssh://")
    assert (url.scheme, url.hostname, url.username, url.port, url.path) == (
        "ssh", "host.example", "ro@t", 2222, "/x")
    assert url.options == {"key": "/a b"}


@pytest.mark.parametrize(("url", "parts"), [
    ("ssh://h?kye=/k", ["unknown query key 'kye'", "expected one of key= (the private key), "
                        "known_hosts= (a known_hosts file)", "got kye=/k", "did you mean key=?"]),
    ("ssh://h?nkown_hosts=/k", ["unknown query key 'nkown_hosts'", "did you mean known_hosts=?"]),
    ("ssh://h?insecure=1", ["unknown query key 'insecure'", "got insecure=1",
                            "use only these keys, or drop insecure="]),
    ("ssh://h?key=/a&key=/b", ["key= given 2 times: expected key= once, got key=/a key=/b"]),
    ("ssh://h?key=", ["key= has no value: expected key=<the private key>, got key=",
                      "give a value or drop key="]),
    ("ssh://h:port", ["bad port: expected a port number 1-65535 after the host"]),
    ("docker://h", ["not a ssh:// URL: expected ssh://user@host, got docker://"]),
])
def test_parse_refuses_with_where_what_expected_got_and_fix(url: str, parts: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        parse_node_url("n1", url, "ssh", KEYS, "ssh://user@host")
    message = str(err.value)
    assert message.startswith(f"node 'n1': url {url!r}: ")
    for part in parts:
        assert part in message


def test_the_error_names_the_offending_key() -> None:
    with pytest.raises(ConfigError) as err:
        parse_node_url("n1", "ssh://h?kye=/k", "ssh", KEYS, "ssh://")
    assert err.value.key == "kye"


def test_a_scheme_without_keys_says_it_takes_no_query() -> None:
    assert describe_keys({}) == "no query keys"
    with pytest.raises(ConfigError, match=r"expected no query keys, got x=1; local:// takes no "
                                          r"query: drop \?x=1"):
        parse_node_url("n", "local://?x=1", "local", {}, "local://")


# --------------------------------------------------------- every scheme, same rules
SCHEMES: list[tuple[str, Callable[[str], object], str, dict[str, str]]] = [
    ("local", lambda url: LocalTarget("n1", url), "local://", {}),
    ("docker", lambda url: DockerTarget("n1", url), "docker://", DOCKER_KEYS),
    ("ssh", lambda url: SshTarget("n1", url), "ssh://root@10.0.0.5", SSH_KEYS),
    ("vm", lambda url: VmTarget("n1", url), "vm://6.1", VM_URL_KEYS),
    ("kubernetes", lambda url: KubernetesTarget("n1", url), "kubernetes://worker", KUBE_KEYS),
]


@pytest.mark.parametrize(("scheme", "build", "base", "keys"), SCHEMES, ids=[f"{s[0]}-url" for s in SCHEMES])
def test_every_scheme_refuses_an_unknown_key(scheme: str, build: Callable[[str], object],
                                             base: str, keys: dict[str, str]) -> None:
    url = f"{base}?kye=/k"
    with pytest.raises(ConfigError) as err:
        build(url)
    message = str(err.value)
    assert message.startswith(f"node 'n1': url {url!r}: unknown query key 'kye': expected ")
    assert describe_keys(keys) in message
    assert "got kye=/k" in message


@pytest.mark.parametrize(("scheme", "build", "base", "keys"), SCHEMES[1:],
                         ids=[f"{s[0]}-url" for s in SCHEMES[1:]])
def test_every_scheme_refuses_a_repeated_or_empty_key(scheme: str, build: Callable[[str], object],
                                                      base: str, keys: dict[str, str]) -> None:
    key = next(iter(keys))
    with pytest.raises(ConfigError, match=f"{key}= given 2 times"):
        build(f"{base}?{key}=/a&{key}=/b")
    with pytest.raises(ConfigError, match=f"{key}= has no value"):
        build(f"{base}?{key}=")


def test_the_registry_builds_each_scheme_with_its_declared_keys() -> None:
    target: Target = build_target("n1", "ssh://root@h?key=/k")
    assert isinstance(target, SshTarget)
    assert target.URL_KEYS == SSH_KEYS
    assert LocalTarget.URL_KEYS == {}
    assert VmTarget.URL_KEYS == VM_URL_KEYS


def test_local_takes_nothing_after_the_scheme() -> None:
    with pytest.raises(ConfigError, match="local:// names this machine"):
        LocalTarget("n1", "local://elsewhere")
