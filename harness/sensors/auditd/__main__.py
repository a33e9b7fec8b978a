"""``python -m harness.sensors.auditd STATE RULES``: the shared daemon's watchdog."""

import sys
from pathlib import Path

from harness.sensors.auditd.daemon import reap

reap(Path(sys.argv[1]), Path(sys.argv[2]))
