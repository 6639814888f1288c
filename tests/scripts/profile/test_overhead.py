"""The Python-work profiler runs every loop on the bundled model and splits each block's time into engine and
Python (it patches modules, so it runs in a process of its own)."""
import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO, require_real_model


@pytest.mark.slow
def test_overhead_splits_every_loops_block_into_engine_and_python(tmp_path):
    require_real_model()
    out, q = tmp_path / "overhead", tmp_path / "question.jsonl"
    q.write_text(json.dumps({"question_id": 1, "category": "writing", "turns": ["Write a haiku about rain."]}) + "\n")
    subprocess.run([sys.executable, "-m", "scripts.profile", "overhead", "--model-id", "smollm2-135m",
                    "--questions", "1", "--question-file", str(q), "--max-new-tokens", "8", "--num-threads", "1",
                    "--out", str(out)],
                   cwd=REPO, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True)
    res = json.loads((out / "overhead.json").read_text())
    assert sorted(res) == ["greedy", "hybrid/goodput", "self/threshold"]
    for r in res.values():
        assert r["blocks"] > 0 and r["tokens"] >= r["blocks"] and 0 < r["python_share"] < 1
        assert r["engine_ms_per_block"] + r["python_ms_per_block"] == pytest.approx(r["ms_per_block"], abs=2e-3)
    assert "draft" in res["self/threshold"]["python_by_phase_ms"]
