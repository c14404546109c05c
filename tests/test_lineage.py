"Lineage against real git and real files: dirty checkouts, content hashes that move with the bytes, run ids."

import subprocess
from datetime import UTC, datetime

import numpy as np
import pytest

from intraday.data import synth_market
from intraday.lineage import atomic_write, bars_fingerprint, file_sha256, git_revision, replace_dir, run_id


def git(cwd, *args):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def test_git_revision_of_a_real_checkout_clean_and_dirty(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "a.txt").write_text("one")
    git(tmp_path, "add", "a.txt")
    git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "one")
    head = git(tmp_path, "rev-parse", "HEAD")
    assert git_revision(tmp_path) == head
    (tmp_path / "untracked.txt").write_text("ignored")  # untracked files do not make it dirty
    assert git_revision(tmp_path) == head
    (tmp_path / "a.txt").write_text("two")
    assert git_revision(tmp_path) == f"{head}-dirty"


def test_fingerprint_moves_with_any_value_or_timestamp():
    bars = synth_market(days=1, seed=1)
    base = bars_fingerprint(bars)["data_hash"]
    rng = np.random.default_rng(0)
    for _ in range(20):
        b = bars.copy()
        i, j = rng.integers(len(b)), rng.integers(5)
        b.iloc[i, j] = np.nextafter(b.iloc[i, j], np.inf)
        assert bars_fingerprint(b)["data_hash"] != base
    shifted = bars.copy()
    shifted.index = shifted.index + np.timedelta64(1, "ns")
    assert bars_fingerprint(shifted)["data_hash"] != base


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write(target, lambda p: p.write_text("old"))

    def crash(p):
        p.write_text("half of the new")
        raise KeyboardInterrupt  # even an interrupt mid-write leaves the old content

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    import hashlib

    assert file_sha256(target) == hashlib.sha256(b"old").hexdigest()


def test_run_id_sorts_by_time():
    a = run_id("PPO", 1, "ab" * 32, datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC))
    b = run_id("PPO", 1, "ab" * 32, datetime(2024, 1, 2, 3, 4, 6, tzinfo=UTC))
    assert a == "20240102-030405-ppo-s1-abababab" and sorted([b, a]) == [a, b]


def test_replace_dir_replaces_whole_and_keeps_the_old_on_failure(tmp_path):
    out = tmp_path / "demo"
    replace_dir(out, lambda d: (d / "a.txt").write_text("first"))
    replace_dir(out, lambda d: (d / "b.txt").write_text("second"))
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]

    def broken(d):
        (d / "half.txt").write_text("partial")
        raise RuntimeError("build failed")

    with pytest.raises(RuntimeError, match="build failed"):
        replace_dir(out, broken)
    assert [p.name for p in out.iterdir()] == ["b.txt"] and (out / "b.txt").read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]  # nothing left aside
    with pytest.raises(RuntimeError, match="build failed"):
        replace_dir(tmp_path / "new", broken)
    assert not (tmp_path / "new").exists()
