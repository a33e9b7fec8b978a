"""The Spark parity engine gives the same report as the DuckDB one (pyspark local[1])."""

from __future__ import annotations

import random
import shutil

import pytest

from harness.core.detection import Detection
from harness.report.parity import Options, parity

pytestmark = [pytest.mark.spark,
              pytest.mark.skipif(shutil.which("java") is None, reason="pyspark needs java (ci/setup.sh)")]


@pytest.fixture(scope="module")
def local_spark():
    import os

    os.environ["SHADOWTEST_SPARK_MASTER"] = "local[1]"
    os.environ["SHADOWTEST_SPARK_PARTITIONS"] = "2"
    from harness.report.parity.spark import _session

    spark = _session("local[1]")
    yield spark
    spark.stop()


def _detections(seed: int) -> tuple[list[Detection], list[Detection]]:
    rnd = random.Random(seed)  # noqa: S311 - test data, not secrets
    inc, cand = [], []
    for i in range(400):
        node = rnd.choice(["n1", "n2", None])
        tech = rnd.choice(["T1611", "T1098", "T1055.008"])
        t = 1_800_000_000.0 + rnd.randint(0, 3000) / 10.0
        inc.append(Detection("inc", f"rule-{tech}", (tech,), rnd.choice(["high", "critical", "low"]),
                             node=node, observed_at=t))
        if rnd.random() < 0.8:  # the candidate sees most of them, with skew up to 2.5 s
            cand.append(Detection("cand", f"c-{tech}", (tech,), None, node=node,
                                  observed_at=t + rnd.choice([0.0, 2.0, -2.0, 2.5, rnd.random()])))
        if i % 7 == 0:  # duplicates on the candidate side
            cand.append(Detection("cand", f"c-{tech}", (tech,), None, node=node, observed_at=t))
    return inc, cand


def test_spark_engine_matches_duckdb_exactly(local_spark) -> None:
    inc, cand = _detections(7)
    opts = Options(("node", "technique"), 2_000_000, 0.9, ("critical", "high"))
    duck = parity(inc, cand, opts, 30 * 86400.0, engine="duckdb")
    spark = parity(inc, cand, opts, 30 * 86400.0, engine="spark")
    assert spark == duck
    assert 0 < duck["totals"]["matched"] < len(inc)
    assert duck["totals"]["incumbent_null_keys"] > 0
