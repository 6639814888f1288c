"""The DVI loop on a tiny model: lossless while learning, the tuples it pushes, cadence, checkpoints, resume."""
import csv

import pytest
import torch

from dvi.checkpoint import CheckpointError
from dvi.online_loop import DVILearner
from evaluation import cli as cli_utils
from kangaroo.drafter_head import attach_drafter_head
from kangaroo.greedy import greedy_decode
from kangaroo.kangaroo_model import KangarooModel
from kangaroo.speculative import kangaroo_generate
from tests.helpers import make_tiny_llama, prompts


def dvi_args(tmp_path, *extra):
    argv = ["--model-id", "tiny", "--device", "cpu", "--question-file", __file__, "--dvi-batch-size", "4",
            "--dvi-update-every", "1", "--dvi-buffer-size", "64", "--dvi-topk", "16", "--dvi-warmup-steps", "3",
            "--dvi-lr", "0.05", "--dvi-lora-r", "4", "--metrics-out", str(tmp_path / "metrics"),
            "--save-lora-path", str(tmp_path / "ckpt"), "--metrics-every", "1000",
            # deterministic cadence here (inline, no time cap); the thread and the cap: test_background_trainer.py
            "--dvi-trainer", "inline", "--max-online-train-ms", "1000000", *extra]
    return cli_utils.dvi_config(cli_utils.parse_args("kangaroo", argv))


def make(tmp_path, *extra, lm=None):
    lm = lm or make_tiny_llama()
    km = KangarooModel(model_id="tiny", base_model=lm, exit_layer=2)
    attach_drafter_head(km, r=4, alpha=8.0)
    lines = []
    return lm, km, DVILearner(km, dvi_args(tmp_path, *extra), print_fn=lines.append), lines


def run(km, learner, ids_list, n=30):
    return [kangaroo_generate(km, ids, n, set(), steps=4, threshold=0.0, on_block=learner.on_block)
            for ids in ids_list]


@pytest.mark.parametrize("store", ["topk", "full"])
def test_lossless_while_learning(tmp_path, store):
    lm, km, learner, _ = make(tmp_path, "--dvi-online", "true", "--dvi-store", store)
    head_before = km.head_model.weight.clone()
    blocks = []
    orig = learner.on_block
    learner.on_block = lambda blk: (blocks.append((blk.drafted, blk.accepted)), orig(blk))
    for ids, res in zip(prompts(), run(km, learner, prompts())):
        assert res.tokens == greedy_decode(lm, ids, 30, set()).tokens
    assert learner.train_steps > 10 and learner.global_step == len(blocks)
    assert torch.equal(km.head_model.weight, head_before)
    assert km.drafter_head.proj.B.abs().sum() > 0  # the drafter did learn something
    # one tuple per accepted draft plus one for the first rejection
    assert learner.buffer.size == min(64, sum(a + (a < m) for m, a in blocks))


def test_deployed_stores_nothing_and_never_trains(tmp_path):
    _, km, learner, _ = make(tmp_path, "--dvi-online", "false")
    run(km, learner, prompts(1))
    assert learner.global_step > 0  # blocks were seen (and logged)
    assert learner.train_steps == 0 and learner.buffer.size == 0
    assert km.drafter_head.proj.B.abs().sum() == 0


def test_metrics_and_final_checkpoint(tmp_path):
    _, km, learner, lines = make(tmp_path, "--dvi-online", "true", "--save-lora-every", "10")
    run(km, learner, prompts(2))
    summary = learner.finish()
    assert (tmp_path / "ckpt" / "final.pt").exists() and summary["final"].endswith("final.pt")
    assert any(p.name.startswith("step_") for p in (tmp_path / "ckpt").iterdir())
    rows = list(csv.DictReader(open(tmp_path / "metrics" / "acceptance.csv")))
    assert len(rows) == learner.global_step and "acc@4" in rows[0]
    assert len(list(csv.DictReader(open(tmp_path / "metrics" / "trainer.csv")))) == learner.train_steps
    assert 0 < summary["train_share_of_wall"] < 1


def test_resume_continues_step_and_schedule(tmp_path):
    _, km, learner, _ = make(tmp_path, "--dvi-online", "true")
    run(km, learner, prompts(1))
    learner.finish()
    ck = tmp_path / "ckpt" / "final.pt"
    _, km2, resumed, _ = make(tmp_path, "--dvi-online", "true", "--load-lora", str(ck))
    assert resumed.global_step == learner.global_step
    assert resumed.trainer.schedule.step == learner.trainer.schedule.step
    assert resumed.trainer.ema_baseline == pytest.approx(learner.trainer.ema_baseline)
    assert torch.equal(km2.drafter_head.proj.B, km.drafter_head.proj.B)


def test_deployed_drafter_is_deterministic(tmp_path):
    _, km, learner, _ = make(tmp_path, "--dvi-online", "true")
    run(km, learner, prompts(2))
    learner.finish()
    ck = str(tmp_path / "ckpt" / "final.pt")
    accepts = []
    for _ in range(2):
        _, kmd, dep, _ = make(tmp_path, "--dvi-online", "false", "--load-lora", ck)
        # the trained LoRA really was loaded (a failed load would leave B = 0 and still be deterministic)
        assert kmd.drafter_head.proj.B.abs().sum() > 0
        assert torch.equal(kmd.drafter_head.proj.B, km.drafter_head.proj.B)
        accepts.append([r.accept_lengths for r in run(kmd, dep, prompts(2))])
    assert accepts[0] == accepts[1]


def test_mismatched_checkpoint_is_refused_and_kept(tmp_path):
    _, km, learner, _ = make(tmp_path, "--dvi-online", "true")
    run(km, learner, prompts(1))
    learner.finish()
    ck = tmp_path / "ckpt" / "final.pt"
    before = ck.read_bytes()
    lm3 = make_tiny_llama()
    km3 = KangarooModel(model_id="tiny", base_model=lm3, exit_layer=3)
    attach_drafter_head(km3, r=4, alpha=8.0)
    with pytest.raises(CheckpointError, match="exit_layer"):
        DVILearner(km3, dvi_args(tmp_path, "--dvi-online", "true", "--exitlayer", "3", "--load-lora", str(ck)))
    assert ck.read_bytes() == before


def test_bfloat16_model_trains_and_stays_lossless(tmp_path):
    """Half-precision users: the frozen copies and the head stay bf16, the LoRA tensors float32."""
    lm = make_tiny_llama(dtype=torch.bfloat16)
    lm, km, learner, _ = make(tmp_path, "--dvi-online", "true", lm=lm)
    assert km.drafter_head.proj.base.weight.dtype == torch.bfloat16 and km.drafter_head.proj.A.dtype == torch.float32
    ids = prompts(1)[0]
    res = kangaroo_generate(km, ids, 20, set(), steps=1, threshold=0.0, on_block=learner.on_block)
    assert learner.train_steps > 0
    assert km.drafter_head.proj.B.abs().sum() > 0  # the float32 LoRA tensors received bf16-path gradients
    # lossless against the bf16 model's own greedy output, up to the bf16 near-tie allowance of the judge
    from kangaroo.lossless import judge

    verdict = judge(lm, ids, greedy_decode(lm, ids, 20, set()).tokens, res.tokens)
    assert verdict.ok, verdict.line()


def test_learns_only_from_self_drafted_positions_and_judged_declined_candidates(tmp_path):
    from kangaroo.drafters import NGramDrafter, SelfDrafter
    from tests.kangaroo.test_drafters import Never, repetitive_prompt

    lm, km, learner, _ = make(tmp_path, "--dvi-online", "true", "--dvi-trainer", "inline", "--dvi-dense", "false")
    ids = repetitive_prompt()
    kangaroo_generate(km, ids, 30, set(), drafter=NGramDrafter(4), on_block=learner.on_block)
    assert learner.global_step > 0 and learner.buffer.size == 0  # n-gram blocks: nothing to learn from
    # zero-draft self blocks: the declined candidate d_1 is judged by the verifier's v_0, one tuple per block
    ref = greedy_decode(lm, ids, 12, set()).tokens
    cands = []
    orig = learner.on_block
    learner.on_block = lambda b: (cands.append(b.draft.declined_token), orig(b))
    kangaroo_generate(km, ids, 12, set(), drafter=SelfDrafter(4, Never()), on_block=learner.on_block)
    assert learner.buffer.size == 12
    assert learner.buffer.reward[:12].tolist() == [int(c == r) for c, r in zip(cands, ref)]
    assert learner.buffer.pos[:12].tolist() == [1] * 12


class _NoProbe:
    """A goodput-like policy that skips every probe: each self block is a plain greedy step with no candidate."""
    name = "noprobe"

    def decide(self, confs, source="self"):
        return False, False

    def probe(self, source="self"):
        return False

    def observe(self, block):
        pass

    def observe_candidate(self, conf, accepted, source):
        pass


def test_top1_agree_per_block_in_acceptance_csv(tmp_path):
    """top1_agree = [drafter's top-1 at the first position == v_0]: drafted and declined candidates count, a block
    with no candidate (n-gram, skipped probe) leaves the cell empty. Checked against the tokens of greedy decoding."""
    from dvi.metrics import read_acceptance_csv
    from kangaroo.drafters import NGramDrafter, SelfDrafter
    from tests.kangaroo.test_drafters import Never, repetitive_prompt

    lm, km, learner, _ = make(tmp_path, "--dvi-online", "true")
    ids = repetitive_prompt()
    ref = greedy_decode(lm, ids, 24, set()).tokens
    seen = []  # (kind, the drafter's first proposal, v_0)
    orig = learner.on_block

    def hook(kind):
        def on_block(b):
            seen.append((kind, b.first_proposal, b.verification.tokens[0]))
            orig(b)
        return on_block

    for kind, drafter in (("self", SelfDrafter(4)), ("declined", SelfDrafter(4, Never())),
                          ("ngram", NGramDrafter(4)), ("noprobe", SelfDrafter(4, _NoProbe()))):
        res = kangaroo_generate(km, ids, 24, set(), drafter=drafter, on_block=hook(kind))
        assert res.tokens == ref
    learner.finish()
    rows = read_acceptance_csv(tmp_path / "metrics" / "acceptance.csv")
    assert len(rows) == len(seen)
    kinds = {k: [(p, v, r["top1_agree"]) for (k2, p, v), r in zip(seen, rows) if k2 == k] for k, *_ in seen}
    for kind in ("self", "declined"):
        assert all(p is not None and top1 == int(p == v) for p, v, top1 in kinds[kind])
    assert any(top1 == 1 for _, _, top1 in kinds["self"] + kinds["declined"])  # both outcomes occur
    assert any(top1 == 0 for _, _, top1 in kinds["self"] + kinds["declined"])
    # declined candidates: the drafter's top-1 at every new position, judged by the greedy token there
    assert [v for _, v, _ in kinds["declined"]] == ref
    for kind in ("ngram", "noprobe"):
        assert kinds[kind] and all(p is None and top1 is None for p, _, top1 in kinds[kind])
    fl = learner.metrics.first_last(10 ** 6)["first"]
    scored = [t for *_, t in kinds["self"] + kinds["declined"]]
    assert fl["top1_agree"] == pytest.approx(sum(scored) / len(scored))
