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

Every sensor answers its own ``rulepack()`` (``Sensor.rulepack``; ``SensorBase``'s says
"no rule-pack knowledge"), built with the helpers here (``files_pack``, ``oci_pack``,
``reported_pack``); what a detection reports about its rules is the ``SEEN`` field its
sensor's ``normalise`` fills.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from harness.core.detection import Detection

#: a line anywhere in the first 40 lines of a rules file/program: "# shadowtest-rulepack: 7"
#: (also after "//", "/*" or " *")
HEADER = re.compile(r"^\s*(?:#|//|/\*|\*)\s*shadowtest-rulepack:\s*([^\s*]+)", re.MULTILINE)
OCI_REF = re.compile(r"^(?P<repo>[^@\s]+?)(?::(?P<tag>[^@:/\s]+))?@sha256:(?P<digest>[0-9a-f]{64})$")
_HEAD_LINES = 40
#: the ``Detection.fields`` key where a sensor's ``normalise`` puts what the detection reports
#: about the rules that produced it (``"policy:<name>"``, ``"signature:<rule>@<version>"``,
#: ``"agent_version:<v>"``): a tuple of strings, left out when it reports nothing
SEEN = "rulepack_seen"
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


def reported_pack(product: str, version: str | None) -> dict[str, Any]:
    """A product whose events carry no rule-pack identity: the version configured for it
    (``version = ...`` under its ``[tool.shadowtest.sensors.<name>]``), else kind none."""
    if version:
        out = empty("reported")
        out.update(name=product, version=str(version))
        return out
    return empty(reason=f"{product} reports no rule-pack version in its events and no "
                        "version option is set under its [tool.shadowtest.sensors.<name>]")


class Described(Protocol):
    """What ``rulepack_of`` reads: a sensor's own ``rulepack()`` (``Sensor.rulepack``)."""

    def rulepack(self) -> Mapping[str, Any]: ...


def rulepack_of(sensor: Described) -> dict[str, Any]:
    """The rule-pack identity of a sensor, from its own ``rulepack()``, completed with the
    keys it leaves out."""
    return {**empty(), **dict(sensor.rulepack())}


def rulepacks_of(sensors: Mapping[str, Described]) -> dict[str, dict[str, Any]]:
    return {name: rulepack_of(s) for name, s in sensors.items()}


# ----------------------------------------------------------------- seen in events
def seen_in(detections: Iterable[Detection]) -> list[str]:
    """What detections report about the rules that produced them: the ``SEEN`` field each
    sensor's ``normalise`` fills from its product's payload (Tetragon and Sysdig policy
    names, Tracee signature versions, Falcon sensor versions)."""
    out: set[str] = set()
    for d in detections:
        out.update((d.fields or {}).get(SEEN) or ())
    return sorted(out)


def for_row(pack: Mapping[str, Any] | None, detections: Iterable[Detection]) -> dict[str, Any]:
    """The row's ``rulepack``: the sensor's identity plus what this run's detections saw."""
    out = dict(pack) if pack else empty(reason="rule-pack identity not recorded for this row "
                                               "(judged outside a shadowtest session)")
    out["seen"] = sorted({*out.get("seen", ()), *seen_in(detections)})
    return out
