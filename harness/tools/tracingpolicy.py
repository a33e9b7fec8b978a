"""Tetragon TracingPolicy files: every enforcement action they hold (``shadowtest
coverage`` counts which ones scenarios exercise; ``expectations check`` reads the same
policies as rule packs).

Every ``*.yaml``/``*.yml`` file under each directory (or the file itself) is read, all of its
YAML documents. Documents of kind ``TracingPolicy`` and ``TracingPolicyNamespaced``
(apiVersion ``cilium.io/v1alpha1``) are validated against ``schemas/tracingpolicy.schema.json``
(Tetragon's CRD field names and action enum); a document of any other kind (a ConfigMap, a
CiliumNetworkPolicy) is skipped with a note, unless its kind looks like a misspelt
tracing-policy kind, which is an error. A document without a ``kind`` (an agent
configuration, a compose file) is skipped with a note, unless it looks like a tracing policy
(a ``cilium.io`` apiVersion or hooks under ``spec``), which is an error.

An **enforcement action** is one ``matchActions``/``matchReturnActions`` entry of a hook
selector (``spec.kprobes`` / ``tracepoints`` / ``lsmhooks`` / ``uprobes`` / ``usdts``) whose
action is ``Sigkill``, ``Override``, ``Signal`` with ``argSig: 9`` (a kill), or
``NotifyEnforcer`` (the policy's ``enforcers`` act on it). It is identified by (policy
name, hook kind, call/event/hook/symbol, selector index, action index).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.core.errors import ScenarioError
from harness.core.schema import validate
from harness.core.yamlfile import LinedDocument, convert_node, dotted

KINDS = ("TracingPolicy", "TracingPolicyNamespaced")
#: spec key -> (hook kind, the key naming what it is attached to, event kind in Tetragon's export)
HOOKS = {"kprobes": ("kprobe", "call", "process_kprobe"),
         "tracepoints": ("tracepoint", "event", "process_tracepoint"),
         "lsmhooks": ("lsmhook", "hook", "process_lsm"),
         "uprobes": ("uprobe", "symbols", "process_uprobe"),
         "usdts": ("usdt", "name", "process_usdt")}
_HINTS = {"selectors": "write the selectors as a list: 'selectors:' then '- matchArgs: ...'",
          "matchActions": "write the actions as a list: 'matchActions:' then '- action: Sigkill'",
          "action": "use an action name spelt as in Tetragon's CRD, e.g. Sigkill, Override, Signal",
          "kind": "fix the spelling, or drop the document if it is not a tracing policy"}
_SYSCALL_PREFIXES = ("__x64_", "__arm64_", "__ia32_")


@dataclass(frozen=True, slots=True)
class Action:
    """One enforcement action of one hook selector of one policy."""

    policy: str
    namespace: str | None
    kind: str                      # kprobe | tracepoint | lsmhook | uprobe | usdt
    hook: str                      # call / subsystem:event / hook / path:symbol / provider:name
    functions: tuple[str, ...]     # what Tetragon reports as the hook's function
    event: str                     # process_kprobe ...
    selector: int
    index: int
    action: str                    # Sigkill | Override | Signal | NotifyEnforcer
    args: Mapping[str, Any]
    effects: frozenset[str]        # {"kill"} | {"override"} | both (NotifyEnforcer unspecified)
    tags: tuple[str, ...]
    path: Path
    line: int | None
    key: str                       # key path in the document, e.g. spec.kprobes[0].selectors[1]...
    mode: str | None = None        # spec.options policy-mode (monitor: enforcement elided)

    @property
    def name(self) -> str:
        return f"{self.namespace}/{self.policy}" if self.namespace else self.policy

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.args.items())
        return f"{self.action}({args})" if args else self.action


def load_documents(path: Path) -> list[LinedDocument]:
    """Every YAML document of ``path``, lines counted from the top of the file (``load_lined``
    reads one document; this reads a ``---``-separated stream)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(str(path), None, "", f"cannot read file: {exc}") from exc
    docs: list[LinedDocument] = []
    try:
        for node in yaml.compose_all(text, Loader=yaml.SafeLoader):
            if node is None:
                continue
            lines: dict[tuple[str | int, ...], int] = {(): node.start_mark.line + 1}
            data = convert_node(node, (), lines, path)
            if data is not None:  # an empty document (a trailing ---)
                docs.append(LinedDocument(path, data, lines))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise ScenarioError(str(path), mark.line + 1 if mark else None, "",
                            f"invalid YAML: {exc.problem or exc}; fix the syntax "
                            "(indentation, a missing ':' or '-')") from exc
    return docs


def policy_files(roots: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for root in roots:
        out += [root] if root.is_file() else sorted(
            p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    return out


def read_policies(roots: Iterable[Path]) -> tuple[list[Action], list[ScenarioError], list[str]]:
    """(enforcement actions, errors, notes) of every policy document under ``roots``."""
    actions: list[Action] = []
    errors: list[ScenarioError] = []
    notes: list[str] = []
    for path in policy_files(roots):
        try:
            docs = load_documents(path)
        except ScenarioError as exc:
            errors.append(exc)
            continue
        for doc in docs:
            kind = doc.data.get("kind") if isinstance(doc.data, dict) else None
            if kind is None and not _looks_like_policy(doc.data):
                notes.append(f"{path}:{doc.line(())}: note: a document without a kind (an agent "
                             "configuration, a compose file?) is not a tracing policy; skipped")
                continue
            if isinstance(kind, str) and kind not in KINDS and "tracingpolic" not in kind.lower():
                notes.append(f"{path}:{doc.line(())}: note: kind {kind!r} is not a tracing "
                             "policy; skipped")
                continue
            errs = [_hinted(e) for e in validate(doc, "tracingpolicy")]
            if errs:
                errors += errs
                continue
            actions += _actions(doc)
    return actions, errors, notes


def _looks_like_policy(data: Any) -> bool:
    """A kind-less document that is still meant as a tracing policy (a missing ``kind``)."""
    if not isinstance(data, dict):
        return False
    spec = data.get("spec")
    return str(data.get("apiVersion", "")).startswith("cilium.io") or (
        isinstance(spec, dict) and any(k in spec for k in HOOKS))


def _hinted(err: ScenarioError) -> ScenarioError:
    last = err.key.rsplit(".", 1)[-1].split("[", 1)[0]
    hint = _HINTS.get(last)
    if hint is None or "how to fix" in err.message or "add it" in err.message:
        return err
    return ScenarioError(err.path, err.line, err.key, f"{err.message}; {hint}")


def _actions(doc: LinedDocument) -> list[Action]:
    d: dict[str, Any] = doc.data
    spec = d["spec"]
    name = d["metadata"]["name"]
    namespace = d["metadata"].get("namespace") if d["kind"] == "TracingPolicyNamespaced" else None
    mode = next((str(o.get("value")) for o in spec.get("options", ())
                 if o.get("name") == "policy-mode"), None)
    out: list[Action] = []
    for spec_key, (kind, attr, event) in HOOKS.items():
        for h, hook in enumerate(spec.get(spec_key, ())):
            label, functions = _hook_name(kind, attr, hook)
            tags = tuple(str(t) for t in hook.get("tags", ()))
            for s, selector in enumerate(hook.get("selectors") or ()):
                for list_key in ("matchActions", "matchReturnActions"):
                    for i, act in enumerate(selector.get(list_key, ())):
                        effects = _effects(act)
                        if not effects:
                            continue
                        key = ("spec", spec_key, h, "selectors", s, list_key, i)
                        out.append(Action(
                            name, namespace, kind, label, functions, event, s, i, act["action"],
                            {k: v for k, v in act.items() if k != "action"}, effects, tags,
                            doc.path, doc.line(key), dotted(key), mode))
    return out


def _hook_name(kind: str, attr: str, hook: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
    if kind == "tracepoint":
        return f"{hook['subsystem']}:{hook['event']}", (hook["event"],)
    if kind == "uprobe":
        symbols = [*hook.get("symbols", ()), *([hook["symbol"]] if "symbol" in hook else [])]
        return f"{hook['path']}:{','.join(symbols)}", tuple(symbols)
    if kind == "usdt":
        return f"{hook['provider']}:{hook['name']}", (hook["name"],)
    call = str(hook[attr])
    functions = [call]
    if kind == "kprobe" and (hook.get("syscall", True) or call.startswith("sys_")):
        functions += [p + call for p in _SYSCALL_PREFIXES if not call.startswith("__")]
    return call, tuple(functions)


def _effects(act: Mapping[str, Any]) -> frozenset[str]:
    name = act["action"]
    if name == "Sigkill" or (name == "Signal" and act.get("argSig") == 9):
        return frozenset({"kill"})
    if name == "Override":
        return frozenset({"override"})
    if name == "NotifyEnforcer":
        found = ({"kill"} if act.get("argSig") == 9 else set()) | (
            {"override"} if "argError" in act else set())
        return frozenset(found or {"kill", "override"})
    return frozenset()
