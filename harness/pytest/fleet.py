"""The nodes of one pytest process (``NodeFleet``): each node's target and facts, and the
sensors watching it, built at configure time (a bad URL or option is a configuration
error before any attack), started on first use, stopped and closed at the end."""

from __future__ import annotations

import contextlib

import pytest

from harness.core.errors import ConfigError, SensorError, TargetError
from harness.core.node import NodeFacts
from harness.engine.config import Settings
from harness.nodes.reaper import deferred_signals, sweep
from harness.nodes.shell import NodeShell
from harness.sensors.base import OnNode, Sensor, build_sensor
from harness.targets.base import Target, build_target


class NodeFleet:
    """Targets, facts and sensors of the configured nodes, once per process."""

    def __init__(self, settings: Settings, config: pytest.Config | None = None) -> None:
        self.settings = settings
        self.config = config
        self._targets: dict[str, Target] = {}
        self._facts: dict[str, NodeFacts] = {}
        self._node_sensors: dict[str, dict[str, Sensor]] = {}
        self._built: dict[str, dict[str, Sensor]] = {}  # node -> sensors built, not started

    def build(self) -> None:
        """Build (never start) every node's target and every sensor watching it, so that a
        bad node URL or sensor option is a configuration error before the first attack:
        ``ConfigError`` naming the file, line and key."""
        for node, url in self.settings.nodes.items():
            try:
                self.target(node)
            except (ConfigError, TargetError) as exc:
                raise ConfigError(f"{self.settings.where(f'nodes.{node}', 'url')}: "
                                  f"nodes.{node}.url = {url!r}: {exc}") from exc
            sensors: dict[str, Sensor] = {}
            for name in self.judged_on(node):
                options = {**self.settings.sensor_options.get(name, {"type": name}), "node": node}
                try:
                    sensors[name] = build_sensor(name, options)
                except (ConfigError, SensorError, TypeError, ValueError) as exc:
                    key = (exc.key if isinstance(exc, ConfigError) else None) or "type"
                    raise ConfigError(f"{self.settings.where(f'sensors.{name}', key)}: "
                                      f"sensors.{name}: {exc}") from exc
            self._built[node] = sensors

    # ------------------------------------------------------------ nodes
    def target(self, node: str) -> Target:
        if node not in self._targets:
            self._targets[node] = build_target(node, self.settings.nodes[node])
        return self._targets[node]

    def parallel_safe(self, node: str) -> bool:
        """Whether runs on ``node`` may go to several xdist workers at once (the local
        machine and docker: runs are told apart by run id and process tree); any other
        node's runs are grouped on one worker (``xdist_group``), so a VM boots once."""
        return self.target(node).PARALLEL_SAFE

    def facts(self, node: str) -> NodeFacts:
        if node not in self._facts:
            self._facts[node] = self.target(node).facts()
            if self.config is not None:
                self.config.hook.pytest_shadowtest_node_facts(config=self.config,
                                                             facts=self._facts[node])
        return self._facts[node]

    # ------------------------------------------------------------ sensors
    def sensors_for(self, node: str) -> dict[str, Sensor]:
        """The configured sensors watching ``node``, started (live) on first use and kept
        for the session. Each node gets its own instances: the embedded sensors run *on*
        the node (its kernel) through the target's shell. A sensor that cannot start stays
        in the set and is judged SENSOR_DOWN with the reason (never MISSED). A sensor table
        with ``nodes = [...]`` watches only those nodes."""
        if node in self._node_sensors:
            return self._node_sensors[node]
        if not self._node_sensors:
            sweep()  # journals of earlier runs killed with their watchdogs are replayed first
        if node not in self._built:
            self.build()
        started: dict[str, Sensor] = {}
        for name, sensor in self._built[node].items():
            started[name] = sensor  # kept even when it cannot start: judged SENSOR_DOWN
            try:
                if isinstance(sensor, OnNode):
                    sensor.use_shell(self._shell_for_sensor(name, node))
                sensor.start()
            except ConfigError as exc:  # e.g. a literal credential: stop before any attack
                self.close()
                pytest.exit(f"shadowtest: configuration error: {exc}", returncode=4)
            except Exception as exc:
                sensor.stream.close(f"{name} did not start on node {node}: "
                                    f"{type(exc).__name__}: {exc}")
        self._node_sensors[node] = started
        return started

    def built(self, node: str) -> dict[str, Sensor]:
        """The configured sensors watching ``node``, built (as :meth:`build` made them),
        started or not: what a run that cannot happen is reported for."""
        if node not in self._built:
            self.build()
        return self._built[node]

    def _shell_for_sensor(self, name: str, node: str) -> NodeShell:
        shell = self.shell(node)
        if shell is None:
            raise SensorError(f"{name}: runs on the node it watches, and node {node!r} "
                              f"({self.settings.nodes[node]}) gives no shell to run it on")
        return shell

    def judged_on(self, node: str) -> list[str]:
        """The configured sensors that watch ``node`` (``nodes = [...]`` restricts one)."""
        return [name for name in self.settings.sensors
                if node in self.settings.sensor_options.get(name, {}).get("nodes", [node])]

    def shell(self, node: str) -> NodeShell | None:
        return self.target(node).shell()

    def start_sensors(self) -> dict[str, Sensor]:
        """The first configured node's sensors (what a single-node run uses)."""
        return self.sensors_for(next(iter(self.settings.nodes)))

    @property
    def sensors(self) -> dict[str, Sensor]:
        """Every started sensor, as ``name`` (first node) or ``name@node`` (others)."""
        out: dict[str, Sensor] = {}
        for i, (node, sensors) in enumerate(self._node_sensors.items()):
            for name, sensor in sensors.items():
                out[name if i == 0 else f"{name}@{node}"] = sensor
        return out

    def stop_sensors(self) -> None:
        for sensors in reversed(list(self._node_sensors.values())):
            for sensor in reversed(list(sensors.values())):
                with contextlib.suppress(Exception):
                    sensor.stop()
        self._node_sensors.clear()

    def close(self) -> None:
        """Stop every sensor, then close every target. A Ctrl-C or SIGTERM meanwhile is
        absorbed: the session is ending anyway, and a KeyboardInterrupt here (not an
        Exception) would skip every later sensor and target."""
        with deferred_signals() as held:
            try:
                self.stop_sensors()
                for target in reversed(list(self._targets.values())):
                    with contextlib.suppress(Exception):
                        target.close()
                self._targets.clear()
            finally:
                held.clear()
