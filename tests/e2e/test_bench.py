"""Smoke test: `python -m bench --quick` runs end to end on a synthetic reviews file (no timing asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.archive import make_archive
from rnnlab.text.archive import read_reviews, write_reviews

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_quick_benchmark_prints_its_table(tmp_path: Path) -> None:
    environment = dict(os.environ, IMDB_ARCHIVE=str(make_archive(tmp_path / "archive.tar.gz", per_folder=20)),
                       RNNLAB_THREADS="1")
    reviews = tmp_path / "reviews.jsonl"
    write_reviews(read_reviews(Path(environment["IMDB_ARCHIVE"])), reviews)
    completed = subprocess.run([sys.executable, "-m", "bench", "--quick", "--skip-dvc", "--reviews", str(reviews)],
                               cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True, timeout=600)  # a hang guard; minutes on a loaded 2-core CPU
    assert completed.returncode == 0, completed.stderr
    for measurement in ("preprocess + xy", "pipeline step vs bare", "fused vs RNNCell loop", "flush on", "readout=concat",
                        "head activation sigmoid", "reproducible mode over threads, one core, MKL settings"):
        assert measurement in completed.stdout, measurement
    assert "[review]" in completed.stdout  # measured where seed experiments exist, else a row saying it was skipped
