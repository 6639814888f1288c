"""Kangaroo-DVI inside Hugging Face ``generate()``, through its public ``custom_generate`` hook.

    from transformers import AutoModelForCausalLM, AutoTokenizer
    import kangaroo_dvi.hf

    model = AutoModelForCausalLM.from_pretrained("assets/smollm2-135m-instruct")
    inputs = AutoTokenizer.from_pretrained("assets/smollm2-135m-instruct")("The sea is", return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=32, custom_generate=kangaroo_dvi.hf.generate,
                         lora="runs/main/checkpoints/final.pt")    # == model.generate(**inputs, do_sample=False, ...)

``generate`` does its usual preparation (generation config, stopping criteria: ``max_new_tokens`` / ``max_length``,
EOS, your ``stopping_criteria``), then calls ``generate`` below with the prepared pieces and the
extra keywords: ``exit_layer`` (default: ``DrafterConfig``'s), ``lora`` (a drafter checkpoint to deploy, as the
drivers deploy it: its trained adapter and pruned drafter vocabulary come along; none: the identity drafter),
``drafter`` (a ``DrafterConfig``; default: the deployed settings, the ngram,memory,self chain + goodput policy,
whose memory holds the outputs of the earlier calls with the same settings) and ``dvi`` (a ``DVIConfig``;
``DVIConfig(online=True)`` learns online while generating, from ``lora`` if given; ``close(model)`` saves its
checkpoint and metrics). The stopping criteria are checked after every committed token, as greedy
decoding does, so the output is exactly ``model.generate(**inputs, do_sample=False, ...)``'s. A streamer gets each
verify block's committed tokens in one ``put`` and ``end()`` at the end.

The built ``KangarooDVI`` (split model, drafter, caches, learner) is kept on the model object per setting, so
repeated calls do not rebuild it (a changed ``lora`` file is reloaded). Greedy decoding of one sequence only: a
batch, sampling, beams, logits processors or a padded attention mask get one clear error.
"""
from __future__ import annotations

import inspect
import os
import sys

import torch

from common.errors import UserError
from dvi.config import DVIConfig
from kangaroo.drafter_config import DrafterConfig

CACHE_ATTR = "_kangaroo_dvi"


def generate(model, input_ids: torch.Tensor, logits_processor=None, stopping_criteria=None, generation_config=None,
             *, exit_layer: int | None = None, lora: str | None = None, drafter: DrafterConfig | None = None,
             dvi: DVIConfig | None = None, **model_kwargs):
    """``custom_generate`` for ``GenerationMixin.generate``: Kangaroo-DVI decoding, equal to greedy decoding."""
    check_supported(model, input_ids, logits_processor, generation_config, model_kwargs)
    kd = kangaroo_for(model, exit_layer=exit_layer, lora=lora, drafter=drafter, dvi=dvi)
    streamer = model_kwargs.pop("streamer", None) or caller_streamer()  # passed on by a later transformers, or not
    prompt_len = input_ids.shape[1]
    budget = generation_config.max_length - prompt_len
    rule = CriteriaStop(stopping_criteria, input_ids, budget)
    on_commit = (lambda toks: streamer.put(torch.tensor(toks, dtype=torch.long))) if streamer is not None else None
    res = kd.decode(input_ids.to(kd.model.device), budget, stop_rule=rule, on_commit=on_commit, on_block=rule.see)
    if streamer is not None:
        streamer.end()
    seq = torch.cat([input_ids, torch.tensor([res.tokens], dtype=input_ids.dtype, device=input_ids.device)], dim=1)
    if generation_config.return_dict_in_generate:
        from transformers.generation.utils import GenerateDecoderOnlyOutput

        return GenerateDecoderOnlyOutput(sequences=seq)
    return seq


class CriteriaStop:
    """The stop rule of ``kangaroo_generate`` from Hugging Face stopping criteria: checked after every new token
    on the sequence so far, with that token's verifier logits as ``scores`` (what greedy decoding scores it with);
    the first token they stop at is the last one kept. ``budget`` new tokens at most, whatever the criteria."""

    def __init__(self, criteria, prompt: torch.Tensor, budget: int):
        self.criteria, self.budget = criteria, budget
        self.seq = torch.cat([prompt, prompt.new_zeros(1, max(0, budget))], dim=1)
        self.prompt_len = prompt.shape[1]
        self.checked = 0
        self.rows = None

    def see(self, blk) -> None:
        """The block about to be committed: its verifier logits, row j scoring committed token j."""
        self.rows = blk.verification.logits

    def __call__(self, tokens: list[int]) -> tuple[list[int], bool]:
        first = self.checked
        for i in range(first, min(len(tokens), self.budget)):
            self.seq[0, self.prompt_len + i] = tokens[i]
            scores = None if self.rows is None else self.rows[i - first:i - first + 1].float()
            if self.criteria is not None and bool(self.criteria(self.seq[:, :self.prompt_len + i + 1], scores).any()):
                self.checked = i + 1
                return tokens[:i + 1], True
        self.checked = min(len(tokens), self.budget)
        return tokens[:self.checked], self.checked >= self.budget


def check_supported(model, input_ids, logits_processor, generation_config, model_kwargs) -> None:
    """One clear error for what this greedy, one-sequence decoder cannot reproduce."""
    if getattr(model.config, "model_type", None) != "llama":
        raise UserError(f"kangaroo_dvi.hf.generate needs a Llama-family model; this one is "
                        f"{getattr(model.config, 'model_type', None)!r}: call generate without custom_generate")
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise UserError(f"kangaroo_dvi.hf.generate decodes one sequence at a time (batch size 1); got input_ids of "
                        f"shape {list(input_ids.shape)}: call generate once per prompt")
    if model_kwargs.get("attention_mask") is not None:
        raise UserError("kangaroo_dvi.hf.generate got a padded attention_mask (it has zeros): pass the prompt "
                        "without padding (one sequence, batch size 1)")
    gc = generation_config
    wrong = [f"{k}={getattr(gc, k)}" for k, ok in (("do_sample", False), ("num_beams", 1), ("num_return_sequences", 1))
             if getattr(gc, k, ok) not in (ok, None)]
    if wrong:
        raise UserError(f"kangaroo_dvi.hf.generate is greedy decoding only (lossless against the greedy output); "
                        f"got {', '.join(wrong)}: leave them at do_sample=False, num_beams=1, num_return_sequences=1")
    if logits_processor:
        names = ", ".join(type(p).__name__ for p in logits_processor)
        raise UserError(f"kangaroo_dvi.hf.generate verifies plain greedy tokens, so logits processors ({names}) are "
                        "not supported: drop the generation options that add them")
    cache = model_kwargs.get("cache")
    if cache is not None and getattr(cache, "_is_user_defined", False) and cache.get_seq_length() > 0:
        raise UserError("kangaroo_dvi.hf.generate keeps its own caches: do not pass a filled past_key_values/cache")


def kangaroo_for(model, *, exit_layer: int | None, lora, drafter, dvi):
    """The ``KangarooDVI`` of these settings on ``model``, built once and kept on it (rebuilt when ``lora``'s file
    changes)."""
    from kangaroo_dvi import KangarooDVI

    stamp = os.stat(lora).st_mtime_ns if lora and os.path.isfile(lora) else None
    key = (exit_layer, str(lora) if lora else None, stamp, drafter, dvi)
    built = model.__dict__.setdefault(CACHE_ATTR, {})
    if key not in built:
        name = str(getattr(model, "name_or_path", "") or getattr(model.config, "_name_or_path", "") or "hf-model")
        built[key] = KangarooDVI.load(name, base_model=model, exit_layer=exit_layer, lora=lora, dvi=dvi,
                                      drafter=drafter or DrafterConfig(model_id=name), print_fn=lambda *_: None)
    return built[key]


def close(model) -> list[dict]:
    """Finish every online learner built on ``model`` (its DIR/final.pt and metrics) and forget what was built;
    returns the learners' summaries."""
    built = model.__dict__.pop(CACHE_ATTR, {})
    return [s for s in (kd.close() for kd in built.values()) if s is not None]


def caller_streamer():
    """The ``streamer`` passed to ``generate``. transformers 5.x (``_extract_generation_mode_kwargs``, as of 5.24)
    rebuilds the keywords of a callable ``custom_generate`` from the callable's own parameters, which drops the
    streamer after ``generate`` has put the prompt into it; so it is read from ``generate``'s frame."""
    from transformers.generation.utils import GenerationMixin

    code = inspect.unwrap(GenerationMixin.generate).__code__
    frame = sys._getframe(1)
    while frame is not None and frame.f_code is not code:
        frame = frame.f_back
    return None if frame is None else frame.f_locals.get("streamer")
