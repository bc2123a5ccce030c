"""The segment-everything benchmark runs end to end (a 2x2 grid, so it takes seconds)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import SHARED

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_everything.py"


def test_bench_everything_reports_time_counts_and_both_bounds():
    """With the approximate decoder: the counting wrapper passes the precision on."""
    cmd = [sys.executable, str(BENCH), "--shared", str(SHARED), "--points-per-side", "2"]
    cmd += ["--decoder-precision", "bf16", "--no-profile", "--threads", "1"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300).stdout
    assert "bf16 decoder: " in out and "4 prompts, " in out
    assert "x the bound" in out and "SAM's formulation: " in out
