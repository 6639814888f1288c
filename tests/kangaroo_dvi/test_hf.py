"""kangaroo_dvi.hf: Kangaroo-DVI through ``generate(custom_generate=...)`` equals Hugging Face's greedy ``generate``,
streamer included, with the deployed default drafter, a deployed checkpoint and online learning; with ``do_sample``
it equals the project's plain sampling with the same seed; what it cannot reproduce gets one clear error."""
import pytest
import torch
from transformers import StoppingCriteria
from transformers.generation.streamers import BaseStreamer

from common.errors import UserError
from dvi.config import BufferConfig, DVIConfig, IOConfig, LoRAConfig, TrainerConfig
from kangaroo_dvi import DrafterConfig, hf
from tests.helpers import make_tiny_llama
from tests.dvi.test_online_loop import prompts
from tests.kangaroo_dvi.helpers import drafter_checkpoint

SELF = DrafterConfig(model_id="tiny", drafter="self", draft_policy="threshold", threshold=0.0, steps=4)


class Recorder(BaseStreamer):
    def __init__(self):
        self.puts, self.ends = [], 0

    def put(self, value):
        self.puts.append(value.reshape(-1).tolist())

    def end(self):
        self.ends += 1

    def new_tokens(self) -> list[int]:
        return [t for p in self.puts[1:] for t in p]  # the first put is the prompt


def test_bundled_model_equals_hf_greedy_streamer_included(real_lm, real_tokenizer):
    for text in ("Write a haiku about the sea.", "List three fruits."):
        inputs = real_tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                    return_tensors="pt", return_dict=True)
        ref_s, our_s = Recorder(), Recorder()
        ref = real_lm.generate(**inputs, max_new_tokens=32, do_sample=False, streamer=ref_s)
        out = real_lm.generate(**inputs, max_new_tokens=32, custom_generate=hf.generate, streamer=our_s)
        assert torch.equal(out, ref)
        assert our_s.puts[0] == ref_s.puts[0] and our_s.new_tokens() == ref_s.new_tokens() == ref[0, -len(
            ref_s.new_tokens()):].tolist()
        assert our_s.ends == ref_s.ends == 1 and all(our_s.puts)
    assert len(real_lm.__dict__[hf.CACHE_ATTR]) == 1  # built once, reused by the later calls
    assert hf.close(real_lm) == [] and hf.CACHE_ATTR not in real_lm.__dict__


def test_readme_example_with_a_checkpoint_trained_by_the_defaults(real_lm, real_tokenizer, tmp_path):
    """The README's example: the bundled model, and a drafter checkpoint as ``--dvi-online true`` leaves it by
    default (the pruned vocabulary of 8192 tokens, DVIConfig's LoRA shape); the hook deploys it as the driver does."""
    from dvi.checkpoint import save_ckpt
    from dvi.config import LoRAConfig
    from kangaroo.drafter_config import apply_drafter_vocab
    from kangaroo.drafter_head import attach_drafter_head
    from kangaroo.kangaroo_model import KangarooModel

    km = KangarooModel(model_id="smollm2-135m", base_model=real_lm)
    vocab = apply_drafter_vocab(DrafterConfig(model_id="smollm2-135m"), km, real_tokenizer, print_fn=lambda *_: None)
    head = attach_drafter_head(km, r=LoRAConfig().r, alpha=LoRAConfig().alpha)
    with torch.no_grad():
        head.proj.B.copy_(torch.randn(head.proj.B.shape, generator=torch.Generator().manual_seed(0)) * 0.01)
    ckpt = str(tmp_path / "final.pt")
    save_ckpt(ckpt, km, None, None, 0.0)
    inputs = real_tokenizer.apply_chat_template([{"role": "user", "content": "Explain rain."}],
                                                add_generation_prompt=True, return_tensors="pt", return_dict=True)
    ref = real_lm.generate(**inputs, max_new_tokens=32, do_sample=False)
    out = real_lm.generate(**inputs, max_new_tokens=32, custom_generate=hf.generate, exit_layer=2, lora=ckpt)
    assert len(vocab) == 8192 and torch.equal(out, ref)
    built = next(iter(real_lm.__dict__[hf.CACHE_ATTR].values()))
    assert torch.equal(built.model.drafter_vocab, km.drafter_vocab)
    assert torch.equal(built.model.drafter_head.proj.B, head.proj.B)
    assert hf.close(real_lm) == []


class StopAt(StoppingCriteria):
    def __init__(self, token):
        self.token, self.scored = token, []

    def __call__(self, input_ids, scores, **kw):
        self.scored.append(None if scores is None else int(scores.argmax(-1)))
        return input_ids[:, -1] == self.token


def test_deployed_checkpoint_stopping_criteria_eos_and_return_dict(tmp_path):
    lm = make_tiny_llama()
    ckpt = drafter_checkpoint(lm, tmp_path / "final.pt", window=4)
    for ids in prompts(3):
        ref = lm.generate(ids, max_new_tokens=30, do_sample=False)
        out = lm.generate(ids, max_new_tokens=30, custom_generate=hf.generate, lora=str(ckpt), drafter=SELF)
        assert torch.equal(out, ref)
        tok = int(ref[0, ids.shape[1] + 9])  # stop at the 10th new token's first occurrence: a criterion, then EOS
        first = ids.shape[1] + ref[0, ids.shape[1]:].tolist().index(tok) + 1
        crit = StopAt(tok)
        out = lm.generate(ids, max_new_tokens=30, custom_generate=hf.generate, lora=str(ckpt), drafter=SELF,
                          stopping_criteria=[crit])
        assert torch.equal(out, ref[:, :first])
        assert crit.scored == ref[0, ids.shape[1]:first].tolist()  # scores: the verifier's logits of each token
        out = lm.generate(ids, max_new_tokens=30, custom_generate=hf.generate, lora=str(ckpt), drafter=SELF,
                          eos_token_id=tok, return_dict_in_generate=True)
        assert torch.equal(out.sequences, lm.generate(ids, max_new_tokens=30, do_sample=False, eos_token_id=tok))
    assert len(lm.__dict__[hf.CACHE_ATTR]) == 1


def test_streamer_gets_a_put_per_verify_block():
    """Prompt lookup on a repetitive prompt (deterministic: threshold rule) commits several tokens in some blocks."""
    lm = make_tiny_llama()
    ids = prompts(1)[0].repeat(1, 3)
    ngram = DrafterConfig(model_id="tiny", drafter="ngram", draft_policy="threshold", threshold=0.0, steps=4)
    ref_s, our_s = Recorder(), Recorder()
    ref = lm.generate(ids, max_new_tokens=30, do_sample=False, streamer=ref_s)
    out = lm.generate(ids, max_new_tokens=30, custom_generate=hf.generate, drafter=ngram, streamer=our_s)
    assert torch.equal(out, ref) and our_s.new_tokens() == ref_s.new_tokens() and our_s.ends == 1
    assert max(len(p) for p in our_s.puts[1:]) > 1 and len(our_s.puts) < len(ref_s.puts)


def test_online_learning_through_generate_then_deploy(tmp_path):
    lm = make_tiny_llama()
    dvi = DVIConfig(online=True, lora=LoRAConfig(r=4, alpha=8.0), buffer=BufferConfig(capacity=64, topk=16),
                    trainer=TrainerConfig(lr=0.05, batch_size=4, update_every=1, kind="inline", max_ms=None),
                    io=IOConfig(save_dir=str(tmp_path / "ckpt"), metrics_out=str(tmp_path / "m"), max_k=4))
    for ids in prompts(3):
        out = lm.generate(ids, max_new_tokens=24, custom_generate=hf.generate, drafter=SELF, dvi=dvi)
        assert torch.equal(out, lm.generate(ids, max_new_tokens=24, do_sample=False))
    (summary,) = hf.close(lm)
    assert summary["train_steps"] > 0
    ids = prompts(4)[3]
    out = lm.generate(ids, max_new_tokens=24, custom_generate=hf.generate, drafter=SELF, lora=summary["final"])
    assert torch.equal(out, lm.generate(ids, max_new_tokens=24, do_sample=False))
    kd = next(iter(lm.__dict__[hf.CACHE_ATTR].values()))
    assert kd.model.drafter_head.proj.B.abs().sum() > 0  # the learned head was deployed


def test_do_sample_equals_plain_sampling_with_the_same_seed():
    """transformers' do_sample/temperature/top_k/top_p and a seed (or a generator, or torch's global generator): the
    project's plain sampling with those params and that seed, token for token (not Hugging Face's own sampler)."""
    from kangaroo.greedy import greedy_decode
    from kangaroo.sampling import SamplingParams

    lm = make_tiny_llama()
    eos = {int(lm.generation_config.eos_token_id)}
    for i, ids in enumerate(prompts(3)):
        p = SamplingParams(temperature=0.8, top_p=0.9, top_k=30, seed=21 + i)
        ref = greedy_decode(lm, ids, 24, eos, sampling=p).tokens
        out = lm.generate(ids, max_new_tokens=24, custom_generate=hf.generate, drafter=SELF, do_sample=True,
                          temperature=0.8, top_p=0.9, top_k=30, seed=21 + i)
        assert out[0, ids.shape[1]:].tolist() == ref
    ids = prompts(1)[0]
    # HF's defaults when sampling: temperature 1, top_k 50, top_p 1; the seed drawn from the generator given
    seed = int(torch.randint(hf.SEED_RANGE, (1,), generator=torch.Generator().manual_seed(4)))
    ref = greedy_decode(lm, ids, 24, eos, sampling=SamplingParams(temperature=1.0, top_k=50, seed=seed)).tokens
    for _ in range(2):
        out = lm.generate(ids, max_new_tokens=24, custom_generate=hf.generate, do_sample=True,
                          generator=torch.Generator().manual_seed(4))
        assert out[0, ids.shape[1]:].tolist() == ref
        torch.manual_seed(4)  # neither: drawn from torch's global generator, as Hugging Face's own sampler is
        out = lm.generate(ids, max_new_tokens=24, custom_generate=hf.generate, do_sample=True)
        assert out[0, ids.shape[1]:].tolist() == ref
    greedy = lm.generate(ids, max_new_tokens=24, do_sample=False)
    assert torch.equal(lm.generate(ids, max_new_tokens=24, custom_generate=hf.generate, seed=3), greedy)


@pytest.mark.parametrize("kwargs, words", [
    ({"input_ids": torch.tensor([[5, 6, 7], [8, 9, 10]])}, "batch size 1"),
    ({"do_sample": True, "min_p": 0.1}, "MinPLogitsWarper is not supported"),
    ({"do_sample": True, "num_return_sequences": 2}, "num_return_sequences=2"),
    ({"do_sample": True, "seed": 1.5}, "seed=1.5 is not an integer"),
    ({"repetition_penalty": 1.3}, "RepetitionPenaltyLogitsProcessor"),
    ({"attention_mask": torch.tensor([[0, 1, 1]])}, "padded attention_mask")])
def test_what_it_cannot_reproduce_is_one_clear_error(kwargs, words):
    lm = make_tiny_llama()
    kwargs = {"input_ids": torch.tensor([[5, 6, 7]]), **kwargs}
    with pytest.raises(UserError, match=words):
        lm.generate(**kwargs, max_new_tokens=4, custom_generate=hf.generate, drafter=SELF)
