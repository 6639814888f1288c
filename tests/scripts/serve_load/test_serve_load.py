"""The load run's figures (scripts/serve_load/report.py) on made-up records: what counts as equal to the reference,
lost, a 5xx or a 503, the percentiles, the agreement quarters, the targets line, the README's reference."""
import csv

from dvi.metrics import heldout_ends
from scripts.serve_load.client import percentile
from scripts.serve_load.report import (
    agreement,
    matches,
    phase_summary,
    targets,
    write_readme,
)

REFS = {0: [5, 6, 7, 2], 1: [8, 9, 10, 11]}


def rec(prompt, status=200, ids=None, max_tokens=4, ttft=0.1, total=0.4, error=None):
    return {"prompt": prompt, "status": status, "token_ids": ids or [], "max_tokens": max_tokens, "ttft_s": ttft,
            "total_s": total, "error": error}


def test_a_shorter_answer_is_checked_against_the_prefix_of_the_reference():
    assert matches(rec(0, ids=[5, 6]), REFS | {0: [5, 6, 7, 2]}) is False  # max_tokens 4: all four expected
    assert matches(rec(0, ids=[5, 6], max_tokens=2), REFS)
    assert matches(rec(1, ids=[8, 9, 10, 11]), REFS) and not matches(rec(1, ids=[8, 9, 10, 12]), REFS)
    assert not matches(rec(3, ids=[1]), REFS)  # no reference: not counted as equal


def test_phase_summary_counts_and_latencies():
    records = [rec(0, ids=[5, 6, 7, 2], ttft=0.1, total=0.4), rec(1, ids=[8, 9, 10, 12], ttft=0.3, total=0.9),
               rec(0, status=503), rec(1, status=None, error="ReadTimeout"), rec(1, status=500),
               rec(0, ids=[5], error="internal error")]
    p = phase_summary("clients", 2, records, 2.0, REFS)
    assert (p["requests"], p["ok"], p["rejected_503"], p["server_5xx"], p["lost"]) == (6, 2, 1, 1, 2)
    assert (p["equal_to_greedy"], p["checked"], p["tokens"], p["tokens_per_s"]) == (1, 2, 8, 4.0)
    assert p["ttft_p50_ms"] == 200.0 and p["tpot_p50_ms"] == 150.0  # (0.3/3 + 0.6/3) / 2 s per token
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0 and percentile([], 0.5) is None


def test_agreement_quarters_and_targets(tmp_path):
    path = tmp_path / "acceptance.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "committed", "top1_agree"])
        for step in range(1, 41):  # 10 blocks before the phase; then 0% agreement rising to 100%
            w.writerow([step, 1 + (step > 30), "" if step % 5 == 0 else int(step > 30)])
    a = agreement(path, 10, 40)
    assert a["blocks"] == 30 and a["first_quarter"]["top1_agree"] == 0.0 and a["last_quarter"]["top1_agree"] == 1.0
    assert a["last_quarter"]["mean_accepted"] == 2.0
    one = phase_summary("clients", 1, [rec(0, ids=[5, 6, 7, 2])], 4.0, REFS)
    four = phase_summary("clients", 4, [rec(0, ids=[5, 6, 7, 2])] * 3, 4.0, REFS)
    over = phase_summary("overload", 9, [rec(0, status=503), rec(0, ids=[5, 6, 7, 2])], 1.0, REFS)
    lines = targets([one, four, over])
    assert lines[0].startswith("4 clients / 1 client tokens/s = 3.00x (met")
    assert "5/5 answers equal" in lines[1] and lines[2].startswith("0 lost") and "1 of 2 turned away" in lines[3]
    held = tmp_path / "heldout.csv"
    held.write_text("step,trainer_steps,drafter,top1,accept_len,n,ms\n0,0,self,0.05,0.06,512,300\n"
                    "900,120,self,0.25,0.4,512,310\n")
    readme = write_readme(tmp_path, {"model_id": "m", "command": "cmd", "server_commands": ["a", "b"], "machine": "cpu",
                                     "phases": [one, four, over], "agreement": a, "targets": lines,
                                     "heldout": heldout_ends(held)}).read_text()
    assert "| clients | 4 |" in readme and "3.00x" in readme and "last quarter **1.0**" in readme
    learn1 = phase_summary("learn-clients", 1, [rec(0, ids=[5, 6, 7, 2])], 4.0, REFS)
    learn4 = phase_summary("learn-clients", 4, [rec(0, ids=[5, 6, 7, 2])] * 2, 4.0, REFS)  # 2x its 1, 67% of frozen
    lines = targets([one, learn1, learn4, four, over])
    assert "learning server, 4 clients / its 1 client tokens/s = 2.00x (met: >= 2.0x)" in lines
    assert "learning server at 4 clients = 67% of the frozen server's tokens/s (not met: >= 75%)" in lines
    readme = write_readme(tmp_path, {"model_id": "m", "command": "cmd", "server_commands": ["a", "b"], "machine": "cpu",
                                     "phases": [learn1, learn4, one, four], "agreement": a, "targets": lines,
                                     "heldout": heldout_ends(held)}).read_text()
    assert "| learn-clients | 4 |" in readme and "| 2.0 | 2.00x |" in readme and "| 3.0 | 3.00x |" in readme
    assert "Held-out agreement of `self`" in readme and "top-1 0.050 -> **0.250**, accepted length 0.06 -> 0.40" \
        in readme and "over 120 trainer steps" in readme
    assert "Reference (every answer checked against it): greedy decoding" in readme
    sampled = {"temperature": 0.7, "top_p": 0.95, "seed": 1}
    lines = targets([one], "plain sampling (same seed)")
    assert "1/1 answers equal to plain sampling (same seed)" in lines[0]
    readme = write_readme(tmp_path, {"model_id": "m", "command": "cmd", "server_commands": ["a", "b"], "machine": "cpu",
                                     "phases": [one], "targets": lines, "sampling": sampled}).read_text()
    assert "plain sampling with the same params and seed (the baseline driver's --temperature 0.7 --top-p 0.95 " \
           "--seed 1" in readme
