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
