"""``shadowtest init``: the scaffolded project is complete, valid and idempotent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness.tools.scaffold import FILES, scaffold


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=120, check=False)


def test_init_writes_every_file_then_is_idempotent(tmp_path: Path) -> None:
    first = _cli(tmp_path, "init")
    assert first.returncode == 0, first.stderr
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) \
        == sorted(FILES.values())
    second = _cli(tmp_path, "init")
    assert second.returncode == 0
    assert "wrote" not in second.stdout
    assert second.stdout.count("up to date") == len(FILES)


def test_init_keeps_a_file_with_other_content_unless_forced(tmp_path: Path) -> None:
    (tmp_path / "shadowtest.toml").write_text("# mine\n")
    written, _, kept = scaffold(tmp_path)
    assert kept == [tmp_path / "shadowtest.toml"]
    assert (tmp_path / "shadowtest.toml").read_text() == "# mine\n"
    assert tmp_path / "shadowtest.toml" not in written
    res = _cli(tmp_path, "init")
    assert res.returncode == 1
    assert "kept" in res.stderr
    assert "--force" in res.stderr
    written, _, kept = scaffold(tmp_path, force=True)
    assert kept == []
    assert written == [tmp_path / "shadowtest.toml"]


def test_scaffolded_project_validates_with_the_builtin_catalogue(tmp_path: Path) -> None:
    scaffold(tmp_path)
    res = _cli(tmp_path, "validate")
    assert res.returncode == 0, res.stderr
    builtin = len(list((Path(__file__).parents[2] / "harness" / "builtin" / "scenarios")
                       .rglob("*.yaml")))
    builtin += len(list((Path(__file__).parents[2] / "harness" / "builtin" / "atomic")
                        .glob("*.yaml")))
    assert f"{builtin + 2} valid file(s), 0 error(s)" in res.stdout  # + example scenario, atomic


def test_validate_names_a_missing_helper_of_the_example(tmp_path: Path) -> None:
    scaffold(tmp_path)
    (tmp_path / "atomic" / "bin" / "read_one_byte.py").unlink()
    res = _cli(tmp_path, "validate")
    assert res.returncode == 1
    assert "example-shadow-read.yaml:" in res.stderr
    assert "executor.command: helper #{bin}/read_one_byte.py does not exist" in res.stderr


def test_validate_finds_atomics_by_content_not_folder_name(tmp_path: Path) -> None:
    """An imported atomic in a folder of any name validates (issue: only 'atomic/' did)."""
    scaffold(tmp_path)
    imported = tmp_path / "art-import"
    imported.mkdir()
    (tmp_path / "atomic" / "example-shadow-read.yaml").rename(imported / "example-shadow-read.yaml")
    (imported / "bin").mkdir()
    (tmp_path / "atomic" / "bin" / "read_one_byte.py").rename(imported / "bin" / "read_one_byte.py")
    res = _cli(tmp_path, "validate", "art-import", "scenarios")
    assert res.returncode == 0, res.stderr
    builtin_atomics = len(list((Path(__file__).parents[2] / "harness" / "builtin" / "atomic")
                               .glob("*.yaml")))
    # the imported atomic, the example scenario, and the built-in atomics it may also use
    assert f": {builtin_atomics + 2} valid file(s), 0 error(s)" in res.stdout
    missing = _cli(tmp_path, "validate", "scenarios")  # no longer configured: unknown atomic
    assert missing.returncode == 1
    assert "unknown atomic 'example-shadow-read'" in missing.stderr
