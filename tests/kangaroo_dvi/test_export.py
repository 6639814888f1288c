"""kangaroo_dvi.export: the PEFT adapter gives the drafter head's logits under PEFT; the standalone drafter gives the
project's drafter logits (exactly with the adapter's window, up to the window with full attention), assisted
generation with it equals greedy and drafts what the self-drafter drafts; the command line."""
import copy
import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from kangaroo.draft_policy import ThresholdStop
from kangaroo.drafters import SelfDrafter
from kangaroo.speculative import kangaroo_generate
from kangaroo.packed_head import configure
from kangaroo_dvi.export import __main__ as cli
from kangaroo_dvi.export import export_peft, export_standalone, load_drafter
from tests.helpers import make_tiny_llama
from tests.dvi.test_online_loop import prompts
from tests.kangaroo_dvi.helpers import drafter_checkpoint

W = 4
VOCAB = list(range(2, 60))  # a pruned drafter vocabulary (EOS 2 included)


def drafter_logits(dm, ids):
    """The project's drafter logits at every position of ``ids`` [1, n], full vocabulary columns."""
    with torch.no_grad():
        out = dm.drafter_logits_from_hk(dm.forward_shallow(ids, dm.new_caches(ids.shape[1] + 1).shallow).hk)[0]
    return out


@pytest.fixture(scope="module")
def lm():
    return make_tiny_llama(dtype=torch.float32)


@pytest.mark.parametrize("vocab", [None, VOCAB])
def test_peft_adapter_gives_the_drafter_heads_logits(lm, tmp_path, vocab):
    from peft import PeftModel

    dm = load_drafter(drafter_checkpoint(lm, tmp_path / "c.pt", window=W, vocab=vocab), "tiny", base_model=lm)
    out = export_peft(dm, tmp_path / "peft", "c.pt")
    keys = load_file(str(out / "adapter_model.safetensors"))
    assert set(keys) == {"base_model.model.lm_head.lora_A.weight", "base_model.model.lm_head.lora_B.weight"}
    assert keys["base_model.model.lm_head.lora_B.weight"].shape == (97, 4)
    meta = json.loads((out / "kangaroo_dvi.json").read_text())
    assert meta["exit_layer"] == 2 and meta["adapter_window"] == W and meta["drafter_vocab"] == vocab
    assert (out / "kangaroo_adapter" / "adapter.safetensors").is_file()
    with pytest.warns(UserWarning, match="tie_word_embeddings"):  # PEFT's note on a LoRA over a tied lm_head
        head = PeftModel.from_pretrained(copy.deepcopy(lm), str(out)).base_model.model.lm_head
    hk = torch.randn(5, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        peft_logits, ours = head(hk), dm.drafter_logits_from_hk(hk)
    cols = slice(None) if vocab is None else torch.tensor(vocab)
    torch.testing.assert_close(peft_logits[:, cols], ours, rtol=1e-5, atol=1e-5)
    if vocab is not None:  # the other rows carry no LoRA delta: the base head's logits
        rest = torch.tensor([i for i in range(97) if i not in VOCAB])
        torch.testing.assert_close(peft_logits[:, rest], hk @ lm.lm_head.weight[rest].T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("window, attention, arch", [(None, "full", "LlamaForCausalLM"),
                                                     (W, "window", "Qwen2ForCausalLM"),
                                                     (W, "full", "LlamaForCausalLM")])
def test_standalone_gives_the_drafters_logits(lm, tmp_path, window, attention, arch):
    dm = load_drafter(drafter_checkpoint(lm, tmp_path / "c.pt", window=window), "tiny", base_model=lm)
    sa = AutoModelForCausalLM.from_pretrained(export_standalone(dm, tmp_path / "sa", attention=attention)).eval()
    assert type(sa).__name__ == arch and sa.config.num_hidden_layers == 2 + (window is not None)
    ids = torch.randint(3, 97, (1, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got = sa(ids).logits[0]
    want = drafter_logits(dm, ids)
    exact_upto = W if (window and attention == "full") else 12  # full attention: exact while the context fits W
    torch.testing.assert_close(got[:exact_upto], want[:exact_upto], rtol=1e-4, atol=1e-4)
    if exact_upto < 12:
        assert (got[exact_upto:] - want[exact_upto:]).abs().max() > 1e-2


def test_pruned_standalone_rows_outside_the_vocabulary_are_zero(lm, tmp_path):
    dm = load_drafter(drafter_checkpoint(lm, tmp_path / "c.pt", vocab=VOCAB), "tiny", base_model=lm)
    sa = AutoModelForCausalLM.from_pretrained(export_standalone(dm, tmp_path / "sa")).eval()
    rest = [i for i in range(97) if i not in VOCAB]
    assert sa.lm_head.weight[rest].abs().max() == 0
    ids = torch.randint(3, 97, (1, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got = sa(ids).logits[0]
    want = drafter_logits(dm, ids)  # columns: VOCAB
    torch.testing.assert_close(got[:, VOCAB], want, rtol=1e-4, atol=1e-4)
    positive = want.max(-1).values > 0  # where a kept token scores above 0, the zero rows cannot win
    assert positive.any() and torch.equal(got[positive].argmax(-1), torch.tensor(VOCAB)[want[positive].argmax(-1)])


def test_assisted_generation_with_the_standalone_equals_greedy_and_drafts_the_same(lm, tmp_path):
    dm = load_drafter(drafter_checkpoint(lm, tmp_path / "c.pt", window=W), "tiny", base_model=lm)
    configure(dm, "float32")  # the export is the float32 drafter (the engine's default int8 head drafts near it)
    sa = AutoModelForCausalLM.from_pretrained(export_standalone(dm, tmp_path / "sa", attention="window")).eval()
    gc = sa.generation_config
    gc.num_assistant_tokens, gc.num_assistant_tokens_schedule, gc.assistant_confidence_threshold = 4, "constant", 0.0
    for ids in prompts(2):
        ref = lm.generate(ids, max_new_tokens=24, do_sample=False)
        assert torch.equal(lm.generate(ids, max_new_tokens=24, do_sample=False, assistant_model=sa), ref)
        blocks = []
        kangaroo_generate(dm, ids, 24, set(), drafter=SelfDrafter(4, ThresholdStop(0.0)),
                          on_block=lambda b, out=blocks: out.append((b.draft.tokens, b.committed)))
        context = ids[0].tolist()
        for drafted, committed in blocks:  # the standalone's greedy continuation of each block's context
            got = sa.generate(torch.tensor([context]), max_new_tokens=len(drafted), do_sample=False)
            assert got[0, len(context):].tolist() == drafted
            context += committed


def test_export_command_line(tiny_model_dir, tmp_path, capsys):
    from kangaroo.model_loading import load_causal_lm

    ckpt = drafter_checkpoint(load_causal_lm(str(tiny_model_dir)), tmp_path / "c.pt", window=W,
                              model_id=str(tiny_model_dir))
    assert cli.main([str(ckpt), "--peft", str(tmp_path / "p"), "--standalone", str(tmp_path / "s")]) == 0
    assert (tmp_path / "p" / "adapter_config.json").is_file()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json", "kangaroo_dvi.json"):
        assert (tmp_path / "s" / name).is_file()
    assert json.loads((tmp_path / "s" / "kangaroo_dvi.json").read_text())["attention"] == "full"
    capsys.readouterr()
    assert cli.run_main(cli.main, [str(tmp_path / "missing.pt"), "--peft", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not exist" in err
    with pytest.raises(SystemExit) as e:
        cli.main([str(ckpt)])
    assert e.value.code == 2
