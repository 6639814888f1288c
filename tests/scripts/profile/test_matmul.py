"""python -m scripts.profile matmul: a table row per input-row count, written where asked; bad shapes: one line."""
import json

import pytest

from kangaroo import cpu_engine
from scripts.profile import matmul

pytestmark = pytest.mark.skipif(cpu_engine.extension() is None, reason="no C++ compiler / AVX2 on this machine")


def test_one_row_per_input_row_count(tmp_path, capsys):
    out = tmp_path / "m"
    assert matmul.main(["--fmt", "q8_0", "--shapes", "40x64,24x96", "--rows", "3", "--repeats", "2",
                        "--out", str(out)]) == 0
    md = (out / "matmul.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [r.split("|")[1].strip() for r in rows] == ["1", "2", "3"]
    assert rows[0].split("|")[3].strip() == "1.00" and "q8_0" in md and "python -m scripts.profile matmul" in md
    assert md.strip() == capsys.readouterr().out.strip()
    assert len(json.loads((out / "matmul.json").read_text())["seconds_by_rows"]) == 3


@pytest.mark.parametrize("args,msg", [(["--shapes", "64x"], "--shapes '64x'"),
                                      (["--shapes", "40x48", "--fmt", "q4_1"], "--fmt q4_1"),
                                      (["--rows", "0"], "--rows")])
def test_bad_arguments_end_in_one_line(args, msg, capsys):
    with pytest.raises(SystemExit) as e:
        matmul.main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and msg in err[0]
