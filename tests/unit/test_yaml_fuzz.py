"""Hostile scenario and atomic files are data (issue 16): seeded mutations of every built-in
scenario and atomic, plus hand-made bombs, go through the loaders ``validate`` uses. Each
must give file:line:key errors or load — never a traceback, never a hang, never an error
that echoes a huge value, never unbounded memory.

The seed is printed; ``SHADOWTEST_FUZZ_SEED=N`` replays one run."""

from __future__ import annotations

import os
import random
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.builtin import ATOMICS, SCENARIOS
from harness.core.atomic import check_atomic
from harness.core.errors import ScenarioError
from harness.core.scenario import check_scenario, load_atomics
from harness.core.yamlfile import MAX_BYTES, MAX_VALUES
from tests.helpers import hang_guard

SEED = int(os.environ.get("SHADOWTEST_FUZZ_SEED", random.SystemRandom().randrange(1 << 30)))
MUTATIONS_PER_FILE = 4
#: an error message quotes a short prefix of a bad value: a generous bound on its length
MAX_MESSAGE = 1200
#: a file that takes longer than this is a hang (the loaders are linear; the slowest real
#: file takes milliseconds): a guard against an infinite loop, not a speed measurement
HANG_GUARD_S = 10

_TAGS = ["!!float abc", "!!bool maybe", "!!int 0xZZ", "!!python/object/apply:os.system ['true']",
         "!!binary '%%%'", "!!timestamp 2020-13-45", "!!set {a: 1}", "!!omap [1, 2]", "!!null x",
         "!<tag:example.com,2000:app/foo> bar", "!local baz"]
_CHARS = ["\0", "\x01", "\x1b", "\x7f", "\ufeff", "\t", ":", "[", "]", "{", "}", "&", "*", "!",
          "|", ">", "-", "#", "'", '"', "%", "@", "`", "\r", "\u2028", "#{", "\udcff"]


def _mutate(text: str, rng: random.Random) -> str:
    lines = text.split("\n")
    op = rng.randrange(9)
    i = rng.randrange(len(lines))
    if op == 0:  # drop a line
        del lines[i]
    elif op == 1:  # duplicate a line (duplicate keys)
        lines.insert(i, lines[i])
    elif op == 2:  # a control or syntax character somewhere
        pos = rng.randrange(len(text) + 1)
        return text[:pos] + rng.choice(_CHARS) + text[pos:]
    elif op == 3:  # truncate
        return text[: rng.randrange(len(text) + 1)]
    elif op == 4:  # a bad tag on a value
        head, sep, _ = lines[i].partition(": ")
        lines[i] = f"{head}{sep or ': '}{rng.choice(_TAGS)}"
    elif op == 5:  # re-indent a line
        lines[i] = " " * rng.randrange(0, 9) + lines[i].lstrip()
    elif op == 6:  # a huge value
        head, _, _ = lines[i].partition(":")
        lines[i] = f"{head}: {'x' * rng.choice([10_000, 200_000])}"
    elif op == 7:  # anchors and aliases
        head, _, value = lines[i].partition(": ")
        lines[i] = f"{head}: &a {value or 'v'}"
        lines.insert(min(len(lines), i + 1), f"{head}_again: *a")
    else:  # a value replaced by a nested flow structure
        head, _, _ = lines[i].partition(":")
        depth = rng.choice([3, 70, 500, 2000])
        lines[i] = f"{head}: {'[' * depth}1{']' * depth}"
    return "\n".join(lines)


def _bombs() -> dict[str, str]:
    laughs = "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
        f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]\n" for n in range(1, 10))
    return {
        "billion-laughs": "id: bomb\n" + laughs,
        "alias-cycle": "id: &x [*x]\n",
        "alias-cycle-mapping": "a: &m {b: *m}\n",
        "deep-flow": "id: " + "[" * 100_000 + "]" * 100_000 + "\n",
        "deep-block": "".join(" " * n + f"k{n}:\n" for n in range(0, 1200)) + " " * 1200 + "v: 1\n",
        "nul": "id: a\0b\nname: x\n",
        "control": "id: \x01\x02\x03\n",
        "not-utf8-surrogate": "id: x\n",  # written as invalid UTF-8 below
        "huge-id": "id: " + "A" * (MAX_BYTES - 100) + "\n",
        "too-big": "id: x\n" + "# pad\n" * (MAX_BYTES // 6 + 10),
        "many-keys": "".join(f"k{n}: v{n}\n" for n in range(40_000)),
        "python-tag": "id: !!python/object/apply:os.system ['touch /tmp/shadowtest-pwned']\n",
        "bad-float": "id: x\nwindow: !!float abc\n",
        "bad-bool": "id: x\nbenign: !!bool maybe\n",
        "key-is-a-list": "[a, b]: 1\n",
        "key-is-a-mapping": "{a: 1}: 2\n",
        "two-documents": "id: a\n---\nid: b\n",
        "merge-key-bomb": laughs + "m:\n  <<: *a9\n",
        "empty": "",
        "only-comment": "# nothing\n",
        "scalar": "just a string\n",
        "bom": "\ufeffid: x\n",
    }


def _corpus(tmp: Path, rng: random.Random) -> Iterator[tuple[str, Path, str]]:
    """(kind, path, label) of every file to try: 'atomic' or 'scenario'."""
    for kind, base in (("atomic", ATOMICS), ("scenario", SCENARIOS)):
        for original in sorted(base.rglob("*.yaml")):
            text = original.read_text()
            for n in range(MUTATIONS_PER_FILE):
                mutated = text
                for _ in range(rng.randrange(1, 4)):
                    mutated = _mutate(mutated, rng) or "\n"
                sub = tmp / kind / f"{original.stem}-{n}" / original.parent.name
                sub.mkdir(parents=True)
                path = sub / original.name  # the file name an atomic's id must equal
                path.write_text(mutated, errors="surrogateescape")
                yield kind, path, f"{original.name} mutation {n}"
    for name, text in _bombs().items():
        for kind in ("atomic", "scenario"):
            path = tmp / f"bomb-{kind}" / name / f"{name}.yaml"
            path.parent.mkdir(parents=True)
            if name == "not-utf8-surrogate":
                path.write_bytes(b"id: \xff\xfe\n")
            else:
                path.write_text(text)
            yield kind, path, f"{name} ({kind})"


def test_mutated_and_hostile_files_give_bounded_errors_never_a_traceback(tmp_path: Path) -> None:
    print(f"fuzz seed {SEED} (replay: SHADOWTEST_FUZZ_SEED={SEED})")
    rng = random.Random(SEED)  # noqa: S311 - reproducible mutations, not secrets
    atomics, errors = load_atomics([ATOMICS])
    assert not errors
    tried = failures = 0
    problems: list[str] = []
    for kind, path, label in _corpus(tmp_path, rng):
        tried += 1
        try:
            with hang_guard(HANG_GUARD_S, f"loading {label} (seed {SEED})"):
                errs, loaded = (check_atomic(path) if kind == "atomic"
                                else check_scenario(path, atomics))
        except Exception as exc:  # the point: nothing may escape
            problems.append(f"{label}: {type(exc).__name__}: {str(exc)[:300]}")
            continue
        if loaded is None:
            failures += 1
            if not errs:
                problems.append(f"{label}: not loaded and no error")
        for err in errs:
            assert isinstance(err, ScenarioError)
            if len(str(err)) > MAX_MESSAGE:
                problems.append(f"{label}: a {len(str(err))}-character error: {str(err)[:200]}")
            if not str(err).startswith(str(path)):
                problems.append(f"{label}: the error does not name the file: {str(err)[:200]}")
    assert not problems, f"seed {SEED}:\n" + "\n".join(problems[:30])
    assert tried >= 200
    assert failures >= tried // 2  # the mutations do break files: the oracle is exercised


@pytest.mark.parametrize("name", ["billion-laughs", "alias-cycle", "alias-cycle-mapping",
                                  "merge-key-bomb", "deep-flow"])
def test_bombs_stop_early_with_bounded_memory(tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_text(_bombs()[name])
    tracemalloc.start()
    try:
        errs, loaded = check_atomic(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert loaded is None
    assert len(errs) == 1
    assert peak < 64 << 20, f"{name}: {peak / 2**20:.0f} MiB to reject a {path.stat().st_size}-byte file"
    assert any(word in str(errs[0]) for word in (str(MAX_VALUES), "nested deeper", "nesting depth",
                                                   "maximum nesting")), str(errs[0])


def test_a_python_tag_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "python-tag.yaml"
    path.write_text(f"id: !!python/object/apply:os.system ['touch {marker}']\n")
    errs, loaded = check_atomic(path)
    assert loaded is None
    assert "python/object/apply" in str(errs[0])
    assert "is not supported here" in str(errs[0])
    assert not marker.exists()
    path.write_text(f"id: !!python/object/apply:os.system 'touch {marker}'\n")
    errs, loaded = check_atomic(path)
    assert loaded is None
    assert "cannot read the value" in str(errs[0])
    assert not marker.exists()


def test_a_huge_bad_value_is_quoted_as_a_prefix(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("id: x\nwindow: !!float " + "9" * 400 + "z\n")
    errs, _ = check_atomic(path)
    text = str(errs[0])
    assert "more characters" in text
    assert len(text) < 600
