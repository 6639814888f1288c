"""DVI with a feature drafter: each tuple carries the feature segment of the entry its verifier row judges (the
TRUE features of the committed sequence), the trainer's step on its part (lowers its loss, touches nothing else),
lossless online learning on the thread and inline, checkpoints (round trip, resume, deploy, mismatches in one line)
and the driver's flags."""
import json

import pytest
import torch

from dvi.checkpoint import CheckpointError, load_ckpt
from dvi.deploy import deploy_drafter, read_deployment
from dvi.online_loop import DVILearner
from dvi.online_trainer import OnlineTrainer
from dvi.config import ScheduleConfig, TrainerConfig
from dvi.trainable_parts import FeaturePart
from evaluation import inference_kangaroo
from kangaroo.draft_policy import make_policy
from kangaroo.drafter_head import attach_drafter_head
from kangaroo.drafters import make_drafter
from kangaroo.feature_drafter import attach_feature_drafter, feature_tensors
from kangaroo.greedy import greedy_decode
from kangaroo.kangaroo_model import KangarooModel
from kangaroo.speculative import kangaroo_generate
from tests.dvi.test_online_loop import dvi_args
from tests.evaluation.test_bad_inputs import one_line, run as run_driver
from tests.helpers import make_tiny_llama, prompts

NO_STEPS = ("--dvi-batch-size", "256", "--dvi-buffer-size", "256")  # a batch never fills: no trainer step


def model(lm=None, window=3, feature=True):
    km = KangarooModel(model_id="tiny", base_model=lm if lm is not None else make_tiny_llama(), exit_layer=2)
    attach_drafter_head(km, r=4, alpha=8.0)
    if feature:
        attach_feature_drafter(km, window=window, r=4, alpha=8.0, init="random")
    return km


def learner(km, tmp_path, *extra):
    return DVILearner(km, dvi_args(tmp_path, "--dvi-online", "true", "--dvi-prefill-positions", "3", *extra),
                      print_fn=lambda *_: None)


def decode(km, lm, dvi, ids_list, kind="ngram,feature,self", n=30):
    drafter = make_drafter(kind, 4, lambda: make_policy("threshold", 0.0))
    for ids in ids_list:
        res = kangaroo_generate(km, ids, n, set(), drafter=drafter, on_block=dvi.on_block, on_prefill=dvi.on_prefill,
                                prefill_positions=dvi.prefill_positions)
        assert res.tokens == greedy_decode(lm, ids, n, set()).tokens
        yield res


def snapshot(fd):
    return {k: v.detach().clone() for k, v in feature_tensors(fd).items()}


def test_tuples_carry_the_segment_of_the_entry_their_row_judges(tmp_path):
    lm = make_tiny_llama()
    km = model(lm, window=3)
    dvi = learner(km, tmp_path, *NO_STEPS)
    blocks, ids = [], prompts(1)[0]
    dvi.on_block = lambda blk, push=dvi.on_block: (blocks.append(blk), push(blk))
    res = list(decode(km, lm, dvi, [ids]))[0]
    seq = torch.cat([ids, torch.tensor([res.tokens])], dim=1)[0, :-1]
    fresh = km.new_caches(64)
    f = km.forward_deep(km.forward_shallow(seq[None], fresh.shallow).h, fresh.deep)[0]
    n = dvi.buffer.size
    assert dvi.train_steps == 0 and n == 3 + sum(b.accepted + 1 for b in blocks)  # prefill + every committed row
    assert int((dvi.buffer.feat_len[:n] == 0).sum()) == 1  # position 0's row: no entry before it
    for i in range(n):
        c, first = int(dvi.buffer.feat_len[i]), int(dvi.buffer.feat_pos[i])
        if not c:
            continue
        k = first + c - 1  # the entry: (f_k, token k+1)
        torch.testing.assert_close(dvi.buffer.feat_f[i, 3 - c:].float(), f[first:k + 1].float(), rtol=2e-3, atol=2e-3)
        assert dvi.buffer.feat_ids[i, 3 - c:].tolist() == seq[first + 1:k + 2].tolist() and c == min(3, k + 1)


def test_trainer_step_lowers_its_loss_on_a_fixed_batch_and_trains_nothing_else(tmp_path):
    lm = make_tiny_llama()
    km = model(lm)
    dvi = learner(km, tmp_path, *NO_STEPS)
    list(decode(km, lm, dvi, prompts(2)))
    batch = dvi.buffer.sample(32)
    lora, head = km.drafter_head.proj.B.clone(), km.head_model.weight.clone()
    before = snapshot(km.feature_drafter)
    t = OnlineTrainer(FeaturePart(km.feature_drafter), TrainerConfig(lr=3e-3, max_ms=None), ScheduleConfig(warmup=0),
                      97)
    losses = [t.step(batch, s)["loss"] for s in range(25)]
    assert losses[-1] < 0.8 * losses[0]
    after = snapshot(km.feature_drafter)
    assert all(not torch.equal(before[k], after[k]) for k in ("net.fc.weight", "net.layer.mlp.down_proj.weight"))
    assert torch.equal(km.drafter_head.proj.B, lora) and torch.equal(km.head_model.weight, head)
    assert torch.equal(km.feature_drafter.drafter_head.proj.base.weight, km.drafter_head.proj.base.weight)


@pytest.mark.parametrize("trainer", ["inline", "thread"])
def test_online_learning_is_lossless_and_trains_both_parts(tmp_path, trainer):
    lm = make_tiny_llama()
    km = model(lm)
    before, lora = snapshot(km.feature_drafter), km.drafter_head.proj.B.clone()
    dvi = learner(km, tmp_path, "--dvi-trainer", trainer, "--dvi-feature-lr", "0.01")
    list(decode(km, lm, dvi, prompts(3)))
    summary = dvi.finish()
    assert summary["train_steps"] > 3
    assert not torch.equal(before["net.fc.weight"], km.feature_drafter.net.fc.weight)  # published to the live one
    assert not torch.equal(lora, km.drafter_head.proj.B)
    assert dvi.training.trainers.get("feature").optimizer.param_groups[0]["lr"] == 0.01
    rows = (tmp_path / "metrics" / "trainer.csv").read_text().splitlines()
    assert "feature_loss" in rows[0] and all(r.split(",")[15] for r in rows[1:])


def test_checkpoint_round_trip_resume_and_deploy(tmp_path):
    lm = make_tiny_llama()
    km = model(lm)
    dvi = learner(km, tmp_path)
    list(decode(km, lm, dvi, prompts(2)))
    dvi.finish()
    ck, trained = tmp_path / "ckpt" / "final.pt", snapshot(km.feature_drafter)
    again = model(lm)
    resumed = learner(again, tmp_path / "again", "--load-lora", str(ck))
    assert all(torch.equal(trained[k], v) for k, v in snapshot(again.feature_drafter).items())
    state = resumed.training.trainers.get("feature").optimizer.state
    assert state and all(int(s["step"]) > 0 for s in state.values())
    steps = resumed.train_steps
    list(decode(again, lm, resumed, prompts(3)[2:]))  # lossless after the resume, and training goes on
    assert resumed.train_steps > steps
    assert not torch.equal(trained["net.fc.weight"], again.feature_drafter.net.fc.weight)
    deployed = KangarooModel(model_id="tiny", exit_layer=2, base_model=lm)
    deploy_drafter(deployed, read_deployment(ck))  # attaches the feature drafter the checkpoint holds
    assert all(torch.equal(trained[k], v) for k, v in snapshot(deployed.feature_drafter).items())
    drafter = make_drafter("feature", 4, lambda: make_policy("threshold", 0.0))
    for ids in prompts(2):
        assert kangaroo_generate(deployed, ids, 20, set(), drafter=drafter).tokens == greedy_decode(lm, ids, 20,
                                                                                                   set()).tokens


def test_mismatched_checkpoints_are_one_line_naming_the_fix(tmp_path):
    lm = make_tiny_llama()
    plain = model(lm, feature=False)
    dvi = learner(plain, tmp_path / "plain", *NO_STEPS)
    list(decode(plain, lm, dvi, prompts(1), kind="ngram,self"))
    dvi.finish()
    with pytest.raises(CheckpointError, match="holds no feature drafter.*leave feature out of --drafter"):
        load_ckpt(tmp_path / "plain" / "ckpt" / "final.pt", model(lm), None, None)
    km = model(lm, window=3)
    dvi = learner(km, tmp_path / "feat", *NO_STEPS)
    list(decode(km, lm, dvi, prompts(1)))
    dvi.finish()
    path = tmp_path / "feat" / "ckpt" / "final.pt"
    other = model(lm, window=5)
    before = snapshot(other.feature_drafter)
    with pytest.raises(CheckpointError, match="window=3 .this run: 5.: pass --feature-window 3"):
        load_ckpt(path, other, None, None)
    assert all(torch.equal(before[k], v) for k, v in snapshot(other.feature_drafter).items())  # nothing changed
    no_feature = model(lm, feature=False)
    load_ckpt(path, no_feature, None, None)  # a run without a feature drafter reads the self-drafter's part
    assert torch.equal(no_feature.drafter_head.proj.B, km.drafter_head.proj.B)


def test_driver_trains_deploys_and_refuses_an_untrained_feature_drafter(tiny_model_dir, tmp_path, capsys):
    conv = json.dumps({"conversations": [{"from": "human", "value": "Hi there, how are you"},
                                         {"from": "gpt", "value": "Hello"}]})
    (tmp_path / "s.jsonl").write_text(conv + "\n" + conv.replace("Hi", "Hello") + "\n")
    base = ["--model-id", str(tiny_model_dir), "--device", "cpu", "--no-progress", "--max-new-tokens", "12",
            "--prompts-jsonl", str(tmp_path / "s.jsonl"), "--metrics-out", str(tmp_path / "m"), "--dvi-topk", "8",
            "--dvi-batch-size", "2", "--drafter-vocab", "0", "--feature-window", "4"]
    rc, _, err = run_driver(inference_kangaroo, base + ["--drafter", "feature", "--answer-file", str(tmp_path / "x")],
                            capsys)
    assert rc == 2
    one_line(err, "--drafter names feature, whose drafter must be trained: pass --dvi-online true")
    train = base + ["--dvi-online", "true", "--drafter", "ngram,feature,self", "--save-lora-path",
                    str(tmp_path / "ck"), "--answer-file", str(tmp_path / "a.jsonl"), "--compare-greedy"]
    rc, out, err = run_driver(inference_kangaroo, train, capsys)
    assert rc == 0 and "2/2" in out + err
    deploy = base + ["--dvi-online", "false", "--load-lora", str(tmp_path / "ck" / "final.pt"), "--drafter",
                     "feature", "--answer-file", str(tmp_path / "d.jsonl"), "--compare-greedy"]
    rc, out, err = run_driver(inference_kangaroo, deploy, capsys)
    assert rc == 0 and "2/2" in out + err and "feature" in out
    other = [{"4": "6", str(tmp_path / "d.jsonl"): str(tmp_path / "d6.jsonl")}.get(a, a) for a in deploy]
    rc, out, err = run_driver(inference_kangaroo, other, capsys)
    assert rc == 0 and "2/2" in out + err  # a deployed feature drafter keeps its checkpoint's window
    auto = [{"feature": "auto", str(tmp_path / "d.jsonl"): str(tmp_path / "da.jsonl")}.get(a, a) for a in deploy]
    rc, out, err = run_driver(inference_kangaroo, auto, capsys)
    assert rc == 0 and "2/2" in out + err and '"drafter": "ngram,memory,feature,self"' in out
