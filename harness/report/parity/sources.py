"""Where ``shadowtest parity`` reads detections from, and its ``[tool.shadowtest.parity]``.

SRC is one of:

- ``TYPE:PATH``: a recorded file of adapter ``TYPE`` (``falco:alerts.jsonl``,
  ``tetragon:export.jsonl``, ``auditd:audit.log``, ``bpftrace:out.jsonl``, ...), read by
  that adapter's normaliser exactly as ``replay`` does;
- ``results:FILE.jsonl[#SENSOR]``: the matched detections inside results rows (of one
  sensor with ``#SENSOR``), each with its row's node;
- ``NAME``: a sensor configured in ``[tool.shadowtest.sensors.NAME]`` whose output is on
  disk: ``replay`` (path, format), ``bpftrace`` (``record``), ``auditd`` (``log``), or any
  sensor with a ``path`` (falco, tetragon, tracee); its node is the configured one.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from harness.core.detection import Detection
from harness.core.errors import ConfigError
from harness.engine.config import Settings, find_config, load_settings
from harness.report.parity.options import DEFAULTS
from harness.report.results import read_rows
from harness.sensors.base import known_sensors

PARITY_KEYS = {
    "engine": "duckdb (one machine) or spark (pyspark)",
    "keys": "comma-separated match keys, e.g. 'node,technique'",
    "tolerance": "max |Δt| of a pair, e.g. '2s'",
    "gate": "minimum parity per gated rule, e.g. 0.95",
    "severity": "gated severities, e.g. 'critical,high' or 'any'",
    "window": "how far back from the latest detection, e.g. '30d'",
}


def configured(explicit: Path | None) -> tuple[dict[str, Any], Settings | None]:
    """``[tool.shadowtest.parity]`` over the defaults, and the settings (None without a
    config file)."""
    source, table = find_config(Path.cwd(), explicit)
    conf = dict(DEFAULTS)
    parity = table.get("parity", {}) if isinstance(table, dict) else {}
    if not isinstance(parity, dict):
        raise ConfigError(f"{source}: [tool.shadowtest.parity] must be a table, got {parity!r}")
    for key, value in parity.items():
        if key not in PARITY_KEYS:
            raise ConfigError(f"{source}: [tool.shadowtest.parity] unknown key {key!r}: expected "
                              f"one of {', '.join(sorted(PARITY_KEYS))}")
        conf[key] = value
    if conf["engine"] not in ("duckdb", "spark"):
        raise ConfigError(f"{source}: [tool.shadowtest.parity] engine = {conf['engine']!r}: "
                          "expected 'duckdb' or 'spark'")
    return conf, (load_settings(Path.cwd(), explicit) if source is not None else None)


def load_source(spec: str, settings: Settings | None) -> list[Detection]:
    kind, sep, path = spec.partition(":")
    if sep and kind == "results":
        file, _, sensor = path.partition("#")
        return from_results(Path(file), sensor or None)
    if sep and kind in known_sensors():
        return replayed(kind, Path(path), None)
    if not sep and settings is not None and spec in settings.sensor_options:
        return from_configured(spec, settings)
    known = ", ".join(sorted(k for k in known_sensors() if k != "replay"))
    configured_names = ", ".join(sorted(settings.sensor_options)) if settings else "none"
    raise ConfigError(
        f"source {spec!r}: expected TYPE:PATH with TYPE one of {known}, "
        f"results:FILE.jsonl[#SENSOR], or a configured sensor name ({configured_names})")


def replayed(fmt: str, path: Path, node: str | None, name: str | None = None) -> list[Detection]:
    from harness.sensors.replay import ReplaySensor

    if not path.is_file():
        raise ConfigError(f"{fmt}:{path}: no such recorded file")
    sensor = ReplaySensor(name=name or fmt, path=str(path), format=fmt, node=node)
    sensor.start()
    dets = sensor.stream.snapshot()
    if node is not None:
        dets = [d if d.node else replace(d, node=node) for d in dets]
    return dets


def from_results(path: Path, sensor: str | None) -> list[Detection]:
    """Matched detections of results rows (deduplicated), each with its row's node."""
    if not path.is_file():
        raise ConfigError(f"results:{path}: no such results file")
    seen: set[tuple[Any, ...]] = set()
    out = []
    for row in read_rows(path):
        det = row.get("detection")
        if not det or (sensor and row.get("sensor") != sensor):
            continue
        technique = tuple(str(t) for t in det.get("technique") or ())
        ident = (det.get("sensor"), det.get("rule"), technique, det.get("pid"),
                 det.get("observed_at"), row.get("node"))
        if ident in seen:
            continue
        seen.add(ident)
        out.append(Detection(
            sensor=str(det.get("sensor") or row.get("sensor")), rule=str(det.get("rule")),
            technique=technique, node=row.get("node"), container_id=det.get("container_id"),
            cgroup_id=det.get("cgroup_id"), pid=det.get("pid"), comm=det.get("comm"),
            names=tuple(det.get("names") or ()), observed_at=float(det.get("observed_at") or 0.0),
        ))
    return out


def from_configured(name: str, settings: Settings) -> list[Detection]:
    options = dict(settings.sensor_options[name])
    kind = str(options.get("type", name))
    node = options.get("node") or next(iter(settings.nodes), None)
    base = settings.root

    def resolve(p: Any) -> Path:
        path = Path(str(p))
        return path if path.is_absolute() else base / path

    if kind == "replay":
        return replayed(str(options["format"]), resolve(options["path"]), node, name)
    if kind == "bpftrace" and options.get("record"):
        return replayed("bpftrace", resolve(options["record"]), node, name)
    if kind == "auditd":
        from harness.sensors.auditd import STATE

        log = options.get("log") or (
            "/var/log/audit/audit.log" if options.get("attach") else STATE / "audit.log")
        return replayed("auditd", resolve(log), node, name)
    if options.get("path"):
        return replayed(kind, resolve(options["path"]), node, name)
    raise ConfigError(
        f"[tool.shadowtest.sensors.{name}] (type {kind!r}) has no recorded output on disk: "
        "set record = 'FILE' (bpftrace) or path = 'FILE', or pass TYPE:PATH / "
        "results:FILE.jsonl#SENSOR instead")
