"""python -m scripts.profile shape on a tiny shape on the CPU (gpu_check.sh runs it with --shape 7b on a GPU)."""
import json
import subprocess

import pytest
import torch

from scripts.profile import shape as profile_shape
from tests.helpers import REPO


def test_tiny_shape_profile_writes_deep_1_to_7_and_a_projection(tmp_path, capsys):
    out = tmp_path / "prof"
    assert profile_shape.main(["--shape", "tiny", "--device", "cpu", "--repeats", "1", "--context", "8",
                               "--steps", "6", "--out", str(out), "--committed", "1.5"]) == 0
    costs = json.loads((out / "block_costs.json").read_text())["costs"]
    assert sorted(int(n) for n in costs["deep_ms"]) == [1, 2, 3, 4, 5, 6, 7]
    assert all(v > 0 for v in costs["deep_ms"].values()) and costs["ar_ms"] > 0
    md = (out / "block_costs.md").read_text()
    assert "Projected speedup" in md and "| c = 1.50, identity |" in md
    from scripts.profile.cost_model import block_ms

    deep = {int(k): v for k, v in costs["deep_ms"].items()}
    expected = 1.5 * costs["ar_ms"] / block_ms({**costs, "deep_ms": deep}, 1, "identity")
    assert f"| 1 | {expected:.2f}x |" in md


def test_random_llama_is_built_in_the_requested_dtype():
    lm = profile_shape.random_llama("tiny", "cpu", torch.bfloat16)
    assert {p.dtype for p in lm.parameters()} == {torch.bfloat16} and torch.get_default_dtype() == torch.float32


def test_bad_committed_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        profile_shape.main(["--shape", "tiny", "--device", "cpu", "--committed", "0.5"])
    assert e.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1


def test_gpu_check_script_parses_and_runs_each_part():
    script = REPO / "scripts" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    for part in ("KANGAROO_TEST_DEVICE=$DEVICE python3 -m pytest tests", "scripts.benchmark ",
                 "--dtype float16", "scripts.profile shape --shape 7b"):
        assert part in text
