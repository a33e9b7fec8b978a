"""The one-to-one matching rule (harness/report/parity/match.py): hand-built cases with known
answers, and Hypothesis against a brute-force maximum matching."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.report.parity.match import match_sorted, sweep


def _match(inc: list[int], cand: list[int], tol: int) -> set[tuple[int, int]]:
    """Pairs as (incumbent position, candidate position) in the given lists; one group."""
    events = sorted([(t, 0, i) for i, t in enumerate(inc)] + [(t, 1, 100 + i) for i, t in enumerate(cand)])
    ts = np.array([e[0] for e in events], dtype=np.int64)
    side = np.array([e[1] for e in events], dtype=np.int8)
    a, b = match_sorted(np.zeros(len(events), dtype=np.int64), ts, side, tol)
    return {(events[i][2], events[j][2] - 100) for i, j in zip(a.tolist(), b.tolist(), strict=True)}


def _maximum(inc: list[int], cand: list[int], tol: int) -> int:
    """Brute force: Kuhn's augmenting paths."""
    owner: dict[int, int] = {}

    def augment(i: int, seen: set[int]) -> bool:
        for j, c in enumerate(cand):
            if abs(inc[i] - c) <= tol and j not in seen:
                seen.add(j)
                if j not in owner or augment(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    return sum(augment(i, set()) for i in range(len(inc)))


def test_match_nearest_first_counterexample_is_matched_maximally() -> None:
    # incumbents 0 and 1.9 s, candidates -1.5 and 1.0 s, tolerance 2 s (in ms)
    assert _match([0, 1900], [-1500, 1000], 2000) == {(0, 0), (1, 1)}


def test_match_tolerance_edge_is_inclusive() -> None:
    assert _match([0], [2000], 2000) == {(0, 0)}
    assert _match([0], [2001], 2000) == set()
    assert _match([2000], [0], 2000) == {(0, 0)}


def test_match_duplicates_pair_one_to_one_in_time_order() -> None:
    # three identical incumbents, two identical candidates: two pairs, the first two by seq
    assert _match([5, 5, 5], [5, 5], 0) == {(0, 0), (1, 1)}


def test_match_ties_across_sides_are_deterministic() -> None:
    first = _match([10, 10], [10], 0)
    assert first == {(0, 0)}
    assert all(_match([10, 10], [10], 0) == first for _ in range(5))


def test_match_one_sided_groups_have_no_pairs() -> None:
    assert _match([1, 2, 3], [], 10) == set()
    assert _match([], [1, 2, 3], 10) == set()


def test_match_oldest_pending_first_and_expiry() -> None:
    # candidate at 0 expires (tol 1000) before the incumbent at 1500 arrives; 1200 pairs
    assert _match([1500], [0, 1200], 1000) == {(0, 1)}


def test_match_groups_never_mix() -> None:
    ts = np.array([0, 0], dtype=np.int64)
    side = np.array([0, 1], dtype=np.int8)
    a, _ = match_sorted(np.array([0, 1]), ts, side, 1000)
    assert len(a) == 0


def test_sweep_agrees_with_fast_path_on_a_dense_group() -> None:
    ts = np.array([0, 1, 2, 3, 4, 5], dtype=np.int64)
    side = np.array([0, 1, 1, 0, 0, 1], dtype=np.int8)
    pairs = sweep(ts, side, 10)
    a, b = match_sorted(np.zeros(6, dtype=np.int64), ts, side, 10)
    assert set(zip(a.tolist(), b.tolist(), strict=True)) == set(pairs)


times = st.lists(st.integers(min_value=0, max_value=40), max_size=7)


@settings(max_examples=400, deadline=None)
@given(inc=times, cand=times, tol=st.integers(min_value=0, max_value=8))
def test_match_is_maximum_one_to_one_within_tolerance(inc: list[int], cand: list[int], tol: int) -> None:
    pairs = _match(inc, cand, tol)
    assert len({i for i, _ in pairs}) == len(pairs) == len({j for _, j in pairs})
    assert all(abs(inc[i] - cand[j]) <= tol for i, j in pairs)
    assert len(pairs) == _maximum(inc, cand, tol)
