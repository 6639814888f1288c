"""--compare-greedy: the driver decodes every turn greedily too, outside the run's time, and reports decode tokens/s
against greedy on the same prompts and whether every output equals greedy's."""
import json

import torch

from evaluation import inference_kangaroo
from evaluation.greedy_reference import GreedyReference
from kangaroo.greedy import DecodeResult, greedy_decode
from tests.helpers import make_tiny_llama
from tests.evaluation.test_drivers import qfile, run  # noqa: F401 - the question-file fixture


def test_driver_reports_decode_against_greedy_and_checks_every_turn(tiny_model_dir, qfile, tmp_path, capsys):  # noqa: F811
    rows = run(inference_kangaroo, tiny_model_dir, qfile, tmp_path / "k.jsonl", "--adapter-path", "none",
               "--steps", "4", "--compare-greedy", "--metrics-out", str(tmp_path / "m"))
    out = capsys.readouterr().out
    s = json.loads((tmp_path / "m" / "vs_greedy.json").read_text())
    assert s["turns"] == 3 and s["equal_to_greedy"] == 3 and s["mismatched_turns"] == []
    assert s["decode_tokens"] == sum(sum(r["choices"][0]["new_tokens"]) for r in rows) == s["greedy_tokens"]
    walls = sum(sum(r["choices"][0]["wall_time"]) for r in rows)
    assert abs(s["decode_s"] - walls) < 1e-3 * max(1.0, walls)  # the run's own time, greedy's not added to it
    assert s["speedup"] == s["decode_tokens_per_s"] / s["greedy_tokens_per_s"] > 0
    assert "[greedy-reference] decode" in out and "outputs equal to greedy: 3/3" in out


def test_a_differing_output_is_counted():
    lm = make_tiny_llama(dtype=torch.float32)
    ref = GreedyReference(lm, 8, set(), "cpu")
    ids = torch.randint(3, 97, (1, 5), generator=torch.Generator().manual_seed(0))
    good = greedy_decode(lm, ids, 8, set())
    ref.after_turn(ids, good, 0.5)
    ref.after_turn(ids, DecodeResult(good.tokens[:-1] + [(good.tokens[-1] + 1) % 97]), 0.5)
    s = ref.summary()
    assert (s["turns"], s["equal_to_greedy"], s["mismatched_turns"]) == (2, 1, [2])
    assert s["decode_tokens_per_s"] == 16 / 1.0


def test_the_speed_per_quarter_is_greedys_time_over_the_decodes_in_each_quarter_of_turns():
    lm = make_tiny_llama(dtype=torch.float32)
    ref = GreedyReference(lm, 4, set(), "cpu")
    ids = torch.randint(3, 97, (1, 5), generator=torch.Generator().manual_seed(0))
    good = greedy_decode(lm, ids, 4, set())
    for wall in (4.0, 4.0, 2.0, 2.0, 1.0, 1.0, 0.5, 0.5):
        ref.after_turn(ids, good, wall)
    ref.per_turn = [(n, dec, g, 1.0) for n, dec, g, _ in ref.per_turn]  # greedy's time fixed: the ratio: 1 / decode's
    assert ref.summary()["speedup_by_quarter"] == [0.25, 0.5, 1.0, 2.0]
    assert GreedyReference(lm, 4, set(), "cpu").by_quarter() == [None] * 4
