"""The peer comparison's parsing and accounting (llama.cpp itself is built and run outside the test suite)."""
import pytest

from scripts.peer_compare import common_prefix, parse_lookup, prorated_seconds, summarize, table

STDERR = ("0.00.484.625 I encoded   15 tokens in    0.094 seconds, speed:  255.929 t/s\n"
          "0.00.484.626 I decoded    9 tokens in    0.149 seconds, speed:   60.355 t/s\n")


def test_lookup_output_gives_the_answer_after_the_prompt_and_the_timings():
    prompt = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    r = parse_lookup(("\n\n" + prompt + "Hello! How can I help?<|im_end|>\n\n").encode(), STDERR, prompt)
    assert r == {"text": "Hello! How can I help?<|im_end|>", "new_tokens": 9, "prefill_s": 0.094, "decode_s": 0.149}
    with pytest.raises(RuntimeError, match="tokens differ"):
        parse_lookup(b"\n\nsomething else", STDERR, prompt)
    with pytest.raises(RuntimeError, match="no timings"):
        parse_lookup(("\n\n" + prompt).encode(), "crashed\n", prompt)


def test_decode_time_is_prorated_to_the_token_budget():
    r = {"new_tokens": 72, "prefill_s": 1.0, "decode_s": 7.2}
    assert prorated_seconds(r, 64) == (64, pytest.approx(1.0 + 6.4))
    assert prorated_seconds({**r, "new_tokens": 10, "decode_s": 1.0}, 64) == (10, 2.0)


def test_summary_counts_equal_answers_and_speed_against_llama_plain():
    recs = [{"ref": {"tokens": [1, 2], "new_tokens": 2, "seconds": 1.0, "passes": 2, "text": "ab"},
             "ours": {"tokens": [1, 2], "new_tokens": 2, "seconds": 0.5, "passes": 1, "text": "ab"},
             "llama_plain": {"text": "abc", "new_tokens": 2, "seconds": 2.0}},
            {"ref": {"tokens": [3], "new_tokens": 1, "seconds": 1.0, "passes": 1, "text": "c"},
             "ours": {"tokens": [4], "new_tokens": 1, "seconds": 0.5, "passes": 1, "text": "d"},
             "llama_plain": {"text": "x", "new_tokens": 1, "seconds": 1.0}}]
    s = summarize(recs, ["ref", "ours", "llama_plain"], "ref")
    assert s["ours"]["answers_equal_reference"] == "1/2" and s["llama_plain"]["answers_equal_reference"] == "1/2"
    assert s["ours"]["tokens_per_s"] == 3.0 and s["llama_plain"]["x_llama_plain"] == 1.0
    assert s["ours"]["x_llama_plain"] == 3.0 and s["ours"]["mean_committed_per_pass"] == 1.5
    assert s["llama_plain"]["common_prefix_chars"] == 1.0 and common_prefix("abc", "abd") == 2
    assert "| ours | 3 | 1.0 | 3.00 | 3.00 | 1/2 |" in table(s, "ref")


def test_the_identity_hybrid_leaves_out_a_feature_drafter_it_does_not_have():
    """The deployed chain of a checkpoint with a feature drafter (``ngram,memory,feature,self``) on the identity
    model, which has none: drafted without it, lossless."""
    from types import SimpleNamespace

    import torch

    from kangaroo.greedy import greedy_decode
    from scripts.peer_compare import identity_hybrid
    from tests.helpers import make_tiny_llama, prompts

    lm = make_tiny_llama(dtype=torch.float32)
    args = SimpleNamespace(model_id="tiny", exitlayer=2, max_new_tokens=12, drafter="ngram,memory,feature,self",
                           draft_policy="threshold")
    decode = identity_hybrid(args, lm, set())
    for ids in prompts(2):
        assert decode(ids)[0] == greedy_decode(lm, ids, 12, set()).tokens
