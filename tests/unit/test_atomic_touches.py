"""Honest atomics (issue 15): every bundled atomic acts on the real path its rule is about —
inside the run's own mount namespace, or, for effects global by nature, only on a disposable
node — never on a run-owned look-alike of a system path."""

from __future__ import annotations

import re

import yaml

from harness.builtin import BUILTIN

#: a system path rebuilt under a run directory: what the look-alike atomics wrote
LOOKALIKE = re.compile(r"shadowtest-#\{run_id\}/(etc|proc|sys|var|run|usr|lib)/")
#: what only a disposable node may have written: the kernel's or the node's own files
GLOBAL = re.compile(r"/proc/sys/|of a disposable node|\(the kernel's")


def _atomics() -> dict[str, dict]:  # type: ignore[type-arg]
    return {p.stem: yaml.safe_load(p.read_text()) for p in (BUILTIN / "atomic").glob("*.yaml")}


def _scenarios() -> list[dict]:  # type: ignore[type-arg]
    return [yaml.safe_load(p.read_text()) for p in (BUILTIN / "scenarios").rglob("*.yaml")]


def test_no_atomic_touches_a_look_alike_of_a_system_path() -> None:
    found = {aid: [t["what"] for t in a.get("touches", ()) if LOOKALIKE.search(t["what"])]
             for aid, a in _atomics().items()}
    assert {aid: what for aid, what in found.items() if what} == {}


def test_atomics_with_global_effects_run_only_on_disposable_nodes() -> None:
    global_atomics = {aid for aid, a in _atomics().items()
                      if any(GLOBAL.search(t["what"]) for t in a.get("touches", ()))}
    assert global_atomics >= {"core-pattern-write", "ld-preload-write-node"}
    for s in _scenarios():
        if s["atomic"] in global_atomics:
            assert "disposable" in (s.get("requires") or {}).get("features", ()), s["id"]


def test_atomics_that_mount_over_system_paths_refuse_the_host_mount_namespace() -> None:
    """A mount over /etc or /run is the run's own only in a private mount namespace: the
    atomic's precondition refuses the host's."""
    mounting = {aid: a for aid, a in _atomics().items()
                if re.search(r"mount -t \S+ .*\s/(etc|run)(\s|$)", a["executor"]["command"])}
    assert set(mounting) >= {"ld-preload-write", "runtime-socket-connect", "sa-token-read"}
    for aid, a in mounting.items():
        checks = [p["command"] for p in a.get("precondition", ())]
        assert any("#{host_mntns}" in c for c in checks), aid
