"""Token ids -> text deltas: the concatenated deltas are the final text, an incomplete character and the start of a
stop string are held back, a stop string ends the text before it (the real tokenizer: byte-level pieces)."""
from kangaroo_dvi.serve.text_stream import TextStream


def stream_all(tok, ids, stop=None, step=1):
    ts, out = TextStream(tok, stop), []
    for n in range(step, len(ids) + step, step):
        out.append(ts.update(ids[:n], final=n >= len(ids)))
        if ts.stopped:
            break
    return out, ts


def test_deltas_add_up_to_the_decoded_text_and_never_show_half_a_character(real_tokenizer):
    text = "Café — naïve 🙂 tests: done."
    ids = real_tokenizer(text).input_ids
    deltas, ts = stream_all(real_tokenizer, ids)
    assert "".join(deltas) == real_tokenizer.decode(ids, skip_special_tokens=True) == ts.sent
    assert all("\ufffd" not in d for d in deltas)
    assert len(ids) > len(text.split())  # the emoji and accents span several tokens: the hold-back was exercised


def test_a_stop_string_ends_the_text_before_it_even_across_tokens(real_tokenizer):
    ids = real_tokenizer("alpha beta END gamma delta").input_ids
    deltas, ts = stream_all(real_tokenizer, ids, stop=["END", "zzz"])
    assert ts.stopped and "".join(deltas) == "alpha beta "
    partial = TextStream(real_tokenizer, ["beta END"])
    assert partial.update(real_tokenizer("alpha beta").input_ids) == "alpha "  # "beta" may start the stop string
    assert partial.update(real_tokenizer("alpha beta E").input_ids) == ""
    assert partial.update(real_tokenizer("alpha beta gamma").input_ids, final=True) == "beta gamma"
    assert not partial.stopped
