"""shadowtest: prove, on real nodes, that runtime-security sensors catch real attacks."""

from harness.core.detection import Detection
from harness.core.health import Health
from harness.core.run import Run, StageResult
from harness.core.verdict import Expectation, Judgement, Verdict, judge

__all__ = ["Detection", "Expectation", "Health", "Judgement", "Run", "StageResult", "Verdict", "judge"]
__version__ = "0.1.0"
