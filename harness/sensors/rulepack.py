"""Rule-pack identity of a sensor: what rules judged a run, recorded in every results row.

A results row's ``rulepack`` is one object with always the same keys::

    {"kind": "file-digest" | "oci-digest" | "policies" | "reported" | "none",
     "name": str | None,        # file name(s) joined by "+", OCI repository, product
     "version": str | None,     # "# shadowtest-rulepack: N" header, OCI tag, configured version
     "sha256": str | None,      # of the one file, of all files (combined), or the OCI digest
     "files": [{"path", "sha256", "version"}],   # every configured file, in load order
     "policies": [str],         # Tetragon TracingPolicy names from the configured files
     "seen": [str],             # what this row's detections report (policy names, versions)
     "reason": str | None}      # why identity fields are null

The identity that ``shadowtest diff`` compares is ``(kind, name, version, sha256)``;
``seen`` depends on what fired in the run and is reported, never compared.

Sensors may define their own ``rulepack() -> dict`` (third-party sensors); the built-ins
are described here from their attributes so that the sensors need no code for it.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.core.detection import Detection

#: a line anywhere in the first 40 lines of a rules file/program: "# shadowtest-rulepack: 7"
#: (also after "//", "/*" or " *")
HEADER = re.compile(r"^\s*(?:#|//|/\*|\*)\s*shadowtest-rulepack:\s*([^\s*]+)", re.MULTILINE)
OCI_REF = re.compile(r"^(?P<repo>[^@\s]+?)(?::(?P<tag>[^@:/\s]+))?@sha256:(?P<digest>[0-9a-f]{64})$")
_HEAD_LINES = 40
_cache: dict[tuple[str, int, int], tuple[str, str | None]] = {}


def empty(kind: str = "none", reason: str | None = None) -> dict[str, Any]:
    return {"kind": kind, "name": None, "version": None, "sha256": None, "files": [],
            "policies": [], "seen": [], "reason": reason}


def identity(pack: Mapping[str, Any] | None) -> tuple[Any, ...]:
    """What ``diff`` compares: (kind, name, version, sha256); rows without the field (older
    results files) have the identity ``("absent", None, None, None)``."""
    if not pack:
        return ("absent", None, None, None)
    return (pack.get("kind"), pack.get("name"), pack.get("version"), pack.get("sha256"))


def describe(pack: Mapping[str, Any] | None) -> str:
    """One short line for reports: ``file-digest sensor.bt v3 sha256:1a2b3c4d5e6f``."""
    if not pack:
        return "absent (row written before rulepack was recorded)"
    if pack.get("kind") == "none":
        return f"none ({pack.get('reason') or 'unknown'})"
    parts = [str(pack.get("kind")), str(pack.get("name") or "?")]
    if pack.get("version"):
        parts.append(f"v{pack['version']}")
    if pack.get("sha256"):
        parts.append(f"sha256:{str(pack['sha256'])[:12]}")
    return " ".join(parts)


# ----------------------------------------------------------------- files
def file_entry(path: Path) -> dict[str, Any]:
    """sha256 and header version of one file (cached by path, mtime and size)."""
    try:
        st = path.stat()
    except OSError as exc:
        return {"path": str(path), "sha256": None, "version": None,
                "error": f"cannot read {path}: {exc.strerror}"}
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _cache:
        data = path.read_bytes()
        head = "\n".join(data[:16384].decode("utf-8", "replace").splitlines()[:_HEAD_LINES])
        m = HEADER.search(head)
        _cache[key] = (hashlib.sha256(data).hexdigest(), m.group(1) if m else None)
    sha, version = _cache[key]
    return {"path": str(path), "sha256": sha, "version": version}


def files_pack(paths: Sequence[Path], kind: str = "file-digest") -> dict[str, Any]:
    """Identity of files loaded in this order: one file = its own sha256; several = sha256
    of the lines ``"<sha256>  <file name>\\n"`` in load order (order matters: later rules
    override earlier ones)."""
    entries = [file_entry(p) for p in paths]
    pack = empty(kind)
    pack["files"] = entries
    bad = [e["error"] for e in entries if e.get("error")]
    if bad:
        pack.update(kind="none", reason="; ".join(bad))
        return pack
    pack["name"] = "+".join(Path(e["path"]).name for e in entries)
    if len(entries) == 1:
        pack["sha256"] = entries[0]["sha256"]
    else:
        text = "".join(f"{e['sha256']}  {Path(e['path']).name}\n" for e in entries)
        pack["sha256"] = hashlib.sha256(text.encode()).hexdigest()
    versions = [e["version"] for e in entries if e["version"]]
    pack["version"] = "+".join(versions) if versions else None
    return pack


def oci_pack(ref: str) -> dict[str, Any]:
    """A falcoctl-pinned OCI artifact ``repo[:tag]@sha256:<64 hex>``."""
    m = OCI_REF.match(ref.strip())
    if not m:
        return empty(reason=f"rules_oci {ref!r} is not repo[:tag]@sha256:<64 hex>")
    pack = empty("oci-digest")
    pack.update(name=m["repo"], version=m["tag"], sha256=m["digest"])
    return pack


def policy_names(paths: Iterable[Path]) -> list[str]:
    """``metadata.name`` of every TracingPolicy document in these YAML files."""
    import yaml

    names: list[str] = []
    for path in paths:
        try:
            docs = list(yaml.safe_load_all(path.read_text("utf-8")))
        except (OSError, yaml.YAMLError):
            continue
        for doc in docs:
            meta = doc.get("metadata") if isinstance(doc, dict) else None
            if isinstance(meta, dict) and meta.get("name"):
                names.append(str(meta["name"]))
    return names


# ----------------------------------------------------------------- per product
def _auditd(sensor: Any) -> dict[str, Any]:
    path = getattr(sensor, "rules_file", None) or getattr(sensor, "rules_path", None)
    if path is None and isinstance(getattr(sensor, "rules", None), str | os.PathLike):
        path = sensor.rules
    if path is None:
        from harness.sensors.auditd import rules_path

        path = rules_path()
    return files_pack([Path(path)])


def _bpftrace(sensor: Any) -> dict[str, Any]:
    program = getattr(sensor, "program", None)
    if program is None:
        from harness.sensors.bpftrace import program_path

        program = program_path()
    if getattr(sensor, "attach_output", None) is not None:
        pack = files_pack([Path(program)])
        pack["reason"] = ("attached to a running bpftrace: the program digested is the "
                          "configured one, which that bpftrace may not run")
        return pack
    return files_pack([Path(program)])


def _falco(sensor: Any) -> dict[str, Any]:
    files = [Path(p) for p in getattr(sensor, "rules_files", None) or ()]
    oci = getattr(sensor, "rules_oci", None)
    if oci:
        pack = oci_pack(str(oci))
        pack["files"] = [file_entry(p) for p in files]
        return pack
    if files:
        return files_pack(files)
    return empty(reason="falco alerts carry no rule-pack version: set rules_files = [...] "
                        "(the files falco loads) or rules_oci = 'repo:tag@sha256:...' "
                        "(the falcoctl-pinned artifact)")


def _tetragon(sensor: Any) -> dict[str, Any]:
    files = [Path(p) for p in getattr(sensor, "policy_files", None) or ()]
    if not files:
        return empty("policies", reason="no policy_files configured: only the policy names "
                                         "seen in events are known")
    pack = files_pack(files, kind="policies")
    pack["policies"] = sorted(set(policy_names(files)))
    return pack


def _versioned(product: str) -> Callable[[Any], dict[str, Any]]:
    def pack(sensor: Any) -> dict[str, Any]:
        version = getattr(sensor, "version", None)
        if version:
            out = empty("reported")
            out.update(name=product, version=str(version))
            return out
        return empty(reason=f"{product} reports no rule-pack version in its events and no "
                            "version option is set under its [tool.shadowtest.sensors.<name>]")
    return pack


PACKS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "auditd": _auditd,
    "bpftrace": _bpftrace,
    "falco": _falco,
    "tetragon": _tetragon,
    "tracee": _versioned("tracee"),
    "sysdig": _versioned("sysdig"),
    "crowdstrike": _versioned("crowdstrike"),
}


def rulepack_of(sensor: Any) -> dict[str, Any]:
    """The rule-pack identity of a sensor (built-in, replay of one, or a third-party sensor
    with a ``rulepack()`` method)."""
    own = getattr(sensor, "rulepack", None)
    if callable(own):
        return {**empty(), **dict(own())}
    kind = getattr(sensor, "NAME", None)
    if kind == "replay":
        pack = rulepack_of(sensor.adapter)
        pack["reason"] = (f"replayed from {getattr(sensor, 'path', '?')}: "
                          f"{pack.get('reason') or 'identity of the configured adapter'}")
        return pack
    fn = PACKS.get(str(kind))
    if fn is None:
        return empty(reason=f"no rule-pack identity known for sensor type {kind!r}: give it "
                            "a rulepack() method returning this object")
    return fn(sensor)


def rulepacks_of(sensors: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: rulepack_of(s) for name, s in sensors.items()}


# ----------------------------------------------------------------- seen in events
def seen_in(detections: Iterable[Detection]) -> list[str]:
    """What detections report about the rules that produced them: Tetragon policy names,
    Tracee signature versions, Falcon sensor versions, Sysdig policy names."""
    out: set[str] = set()
    for d in detections:
        fields = d.fields or {}
        raw = d.raw if isinstance(d.raw, dict) else {}
        if fields.get("policy_name"):
            out.add(f"policy:{fields['policy_name']}")
        if fields.get("policy"):
            out.add(f"policy:{fields['policy']}")
        meta = raw.get("metadata")
        if isinstance(meta, dict) and meta.get("Version"):
            out.add(f"signature:{d.rule}@{meta['Version']}")
        for key in ("agent_version", "sensor_version"):
            if raw.get(key):
                out.add(f"{key}:{raw[key]}")
        device = raw.get("device")
        if isinstance(device, dict) and device.get("agent_version"):
            out.add(f"agent_version:{device['agent_version']}")
    return sorted(out)


def for_row(pack: Mapping[str, Any] | None, detections: Iterable[Detection]) -> dict[str, Any]:
    """The row's ``rulepack``: the sensor's identity plus what this run's detections saw."""
    out = dict(pack) if pack else empty(reason="rule-pack identity not recorded for this row "
                                               "(judged outside a shadowtest session)")
    out["seen"] = sorted({*out.get("seen", ()), *seen_in(detections)})
    return out
