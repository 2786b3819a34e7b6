"""The persistent XLA cache: its files' integrity check, and a resumed attempt that loads the steps an
earlier one compiled (one rank through jobs.task, XLA on CPU with a tiny model, two resolution stages)
and trains bit-equal. Timings are bench.compile_cache's (P6)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.compile_cache import cache_entries, run_rank, tiny_xla_flags
from effnet.core.exits import EXIT_REQUEUE
from effnet.core.xla_cache import (cache_dir, drop_incomplete, is_complete_entry, tensorflow_version,
                                   with_cache_flag)
from tests.runlogs import checkpoint_tensors, train_steps


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (lengths under 128 here)."""
    return bytes([number << 3 | 2, len(payload)]) + payload


ENTRY = _field(1, b"key") + _field(2, b"hlo module") + _field(3, b"executable" * 10)


def test_a_whole_entry_passes_and_any_cut_of_it_fails():
    assert is_complete_entry(ENTRY)
    assert not any(is_complete_entry(ENTRY[:n]) for n in range(len(ENTRY)))
    assert not is_complete_entry(_field(1, b"key") + _field(2, b"hlo module"))  # no executable


def test_drop_incomplete_removes_only_cut_entries(tmp_path):
    (tmp_path / "whole.pb").write_bytes(ENTRY)
    (tmp_path / "cut.pb").write_bytes(ENTRY[:-3])
    (tmp_path / "notes.txt").write_bytes(b"x")
    assert drop_incomplete(tmp_path) == [tmp_path / "cut.pb"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "whole.pb"]
    assert drop_incomplete(tmp_path / "missing") == []


def test_the_cache_is_per_tensorflow_version_and_rank_and_a_users_choice_is_kept():
    assert tensorflow_version() == "2.18.1"  # pyproject pins it; the directory must name it
    assert cache_dir("/runs/x/model", 3, "2.18.1") == Path("/runs/x/model/xla-cache/tf-2.18.1/rank-3")
    assert with_cache_flag("", Path("/c")) == "--tf_xla_persistent_cache_directory=/c"
    assert (with_cache_flag("--tf_xla_auto_jit=2", Path("/c"))
            == "--tf_xla_auto_jit=2 --tf_xla_persistent_cache_directory=/c")
    mine = "--tf_xla_persistent_cache_directory=/mine"
    assert with_cache_flag(mine, Path("/c")) == mine




@pytest.mark.slow
def test_a_resumed_attempt_loads_each_stages_compiled_step_and_trains_bit_equal(mnist, tmp_path):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    proc = run_rank(tiny_xla_flags(mnist, straight), None)
    assert proc.returncode == 0, proc.stderr[-3000:]
    compiled = cache_entries(straight)
    assert len(compiled) == 2, compiled  # one step per stage (32 and 40 px)

    # Stopped as stage 2 starts: only stage 1's step was compiled, under the same name as before.
    proc = run_rank(tiny_xla_flags(mnist, stopped), (1, 0))
    assert proc.returncode == EXIT_REQUEUE, proc.stderr[-3000:]
    first = cache_entries(stopped)
    assert len(first) == 1 and set(first) < set(compiled), (first, compiled)
    # Stopped after stage 2's second of three steps: stage 1's entry was not rewritten, stage 2's was added.
    proc = run_rank(tiny_xla_flags(mnist, stopped), (1, 1))
    assert proc.returncode == EXIT_REQUEUE, proc.stderr[-3000:]
    second = cache_entries(stopped)
    assert second.keys() == compiled.keys() and all(second[name] == first[name] for name in first)
    # An entry cut short (an attempt killed while writing it) is removed before TensorFlow could fail on it.
    cut = cache_dir(stopped, 0, tensorflow_version()) / "xla_compile_cache__1__2__XLA_CPU_JIT.pb"
    cut.write_bytes(ENTRY[:-1])

    # Resumed inside stage 2: it loads that stage's step and compiles nothing.
    proc = run_rank(tiny_xla_flags(mnist, stopped), None)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"removed {cut.name}, an XLA cache entry cut short" in proc.stdout
    assert cache_entries(stopped) == second
    assert train_steps(stopped) == train_steps(straight) == [(e, s) for e in range(2) for s in (1, 2, 3)]
    want, got = checkpoint_tensors(straight), checkpoint_tensors(stopped)
    assert want.keys() == got.keys() and len(want) > 100
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
