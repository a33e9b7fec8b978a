"""The parity matching on Spark (pyspark, local mode or a cluster): the events are grouped
by their key columns and each group is matched by ``harness.report.parity.match`` inside
``applyInPandas`` — the same function the DuckDB engine uses, so both give the same pairs.

Spark's ``groupBy`` puts null key values in a group of their own, as DuckDB's
``IS NOT DISTINCT FROM`` does: a null matches a null only.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np

SCHEMA = "inc_seq long, cand_seq long"


def _session(master: str | None = None) -> Any:
    import sys

    from pyspark.sql import SparkSession

    # the Python workers must be this interpreter (the one with pandas and pyarrow)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName("shadowtest-parity")
    master = master or os.environ.get("SHADOWTEST_SPARK_MASTER")
    if master:
        builder = builder.master(master)
    elif not os.environ.get("SPARK_HOME"):
        builder = builder.master("local[*]")
    return (builder.config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.ui.enabled", "false")
            .config("spark.sql.shuffle.partitions", os.environ.get("SHADOWTEST_SPARK_PARTITIONS", "8"))
            .getOrCreate())


def match_group(tol_us: int) -> Any:
    """The grouped-map function: one key group's events to its pairs."""
    def fn(pdf: Any) -> Any:
        import pandas as pd  # type: ignore[import-untyped,unused-ignore]

        from harness.report.parity.match import match_sorted

        pdf = pdf.sort_values(["ts", "side", "seq"], kind="mergesort")
        seq = pdf["seq"].to_numpy(dtype=np.int64)
        inc, cand = match_sorted(np.zeros(len(pdf), dtype=np.int64),
                                 pdf["ts"].to_numpy(dtype=np.int64),
                                 pdf["side"].to_numpy(dtype=np.int8), tol_us)
        return pd.DataFrame({"inc_seq": seq[inc], "cand_seq": seq[cand]})
    return fn


def match_spark(table: Any, tol_us: int, spark: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """(incumbent seq, candidate seq) of every pair, matched on Spark."""
    with warnings.catch_warnings():
        # pyspark 4 warns that pandas >= 3 is not fully supported; the grouped map here only
        # uses DataFrame construction and to_numpy (tests/spark compare it with DuckDB)
        warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
        warnings.filterwarnings("ignore", message="The copy keyword is deprecated")
        return _match(table, tol_us, spark or _session())


def _match(table: Any, tol_us: int, spark: Any) -> tuple[np.ndarray, np.ndarray]:
    keys = [c for c in table.column_names if c[:1] == "k" and c[1:].isdigit()]
    df = spark.createDataFrame(table.select(["seq", "side", "ts", *keys]).to_pandas())
    grouped = df.groupBy(*keys) if keys else df.groupBy()
    pairs = grouped.applyInPandas(match_group(tol_us), SCHEMA).toPandas()
    pairs = pairs.sort_values("inc_seq", kind="mergesort")
    return (pairs["inc_seq"].to_numpy(dtype=np.int64), pairs["cand_seq"].to_numpy(dtype=np.int64))
