"""Benchmarks run end to end on small inputs (seconds): segment everything on a 2x2
grid, the distillation loader on four small JPEGs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import SHARED

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
BENCH = BENCHMARKS / "bench_everything.py"


def test_bench_everything_reports_time_counts_and_both_bounds():
    """With the approximate decoder: the counting wrapper passes the precision on."""
    cmd = [sys.executable, str(BENCH), "--shared", str(SHARED), "--points-per-side", "2"]
    cmd += ["--decoder-precision", "bf16", "--no-profile", "--threads", "1"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300).stdout
    assert "bf16 decoder: " in out and "4 prompts, " in out
    assert "x the bound" in out and "SAM's formulation: " in out


def test_bench_decode_reports_both_resize_modes():
    cmd = [sys.executable, str(BENCHMARKS / "bench_decode.py"), "--shared", str(SHARED), "--workers", "0"]
    cmd += ["--images", "4", "--size", "300x200", "--img-size", "128", "--device", "cpu"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300).stdout
    rows = [line for line in out.splitlines() if line.startswith("| ") and line[2:5] in ("in ", "on ")]
    assert len(rows) == 2 and all(float(row.split("|")[3]) > 0 for row in rows), out


def test_bench_cutout_times_every_kind_of_edge():
    cmd = [sys.executable, str(BENCHMARKS / "bench_cutout.py"), "--sizes", "300x200,7x5", "--repeats", "1"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300).stdout
    rows = [
        line.split("|")
        for line in out.splitlines()
        if line.startswith("| 300x200") or line.startswith("| 7x5")
    ]
    assert len(rows) == 8 and all(float(row[4]) > 0 for row in rows), out


def test_bench_polygons_times_every_step_of_every_mask():
    cmd = [sys.executable, str(BENCHMARKS / "bench_polygons.py"), "--size", "120x80", "--repeats", "1"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300).stdout
    rows = [line.split("|")[2:-1] for line in out.splitlines() if line.startswith("| ") and "blob" in line]
    assert len(rows) == 3 and all(len(row) == 7 and float(row[2]) > 0 for row in rows), out
    assert int(rows[0][0]) < int(rows[2][0])  # the speckled masks have more loops


def test_bench_gpu_profiles_a_workload_and_goes_on_past_a_failing_one(tmp_path, capsys, monkeypatch):
    """`bench_gpu.py --profile DIR` (its one call on a lent GPU must not be wasted): a
    workload's operators by self time in DIR/<name>.txt and its top lines printed; a
    workload that fails is reported and the run goes on; without --profile nothing runs."""
    import torch

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bench_gpu

    cpu = torch.device("cpu")
    calls = []
    bench_gpu.profile("off", lambda: calls.append(1), cpu)
    assert calls == [] and not list(tmp_path.iterdir())
    monkeypatch.setitem(bench_gpu.PROFILE, "dir", tmp_path / "profiles")
    bench_gpu.profile("train", bench_gpu.train_step(128, 2, False, cpu), cpu, steps=1)

    def broken():
        raise RuntimeError("no kernel for this card")

    bench_gpu.profile("broken", broken, cpu)
    text = (tmp_path / "profiles" / "train.txt").read_text()
    assert text.startswith("train: ") and " ms per call (wall), 1 calls profiled" in text
    assert "aten::convolution_backward" in text and "Optimizer.step#AdamW.step" in text  # a whole step
    out = capsys.readouterr().out
    assert "profile train: " in out and "Self CPU time total: " in out
    assert "profile broken: failed: RuntimeError: no kernel for this card" in out
    assert sorted(p.name for p in (tmp_path / "profiles").iterdir()) == ["train.txt"]
