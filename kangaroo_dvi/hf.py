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

Sampling: ``do_sample=True`` with transformers' ``temperature``, ``top_k`` and ``top_p`` (read from the warpers
``generate`` prepared from the generation config: note its default ``top_k`` of 50) decodes under
``SamplingParams(temperature, top_p, top_k, seed)`` (``kangaroo/sampling.py``), and ``seed`` picks the noise:
``seed=N``; or ``generator=`` a ``torch.Generator``, from which one 63-bit seed is drawn (``torch.randint``:
deterministic, and it advances the generator); or neither: drawn so from torch's global generator, so
``torch.manual_seed(n)`` before ``generate`` reproduces the output as it does for Hugging Face's own sampler. The
output then equals this project's plain sampling with the same params and seed token for token
(``kangaroo.greedy.greedy_decode(model, ids, n, eos, sampling=SamplingParams(...))``, the baseline driver's
``--temperature``), whatever the drafter. It does NOT equal ``generate(do_sample=True)`` without ``custom_generate``:
Hugging Face samples with ``torch.multinomial`` on its own random stream, this project with Gumbel noise of (seed,
position, token id); both draw from the same distribution (the tempered, top-k then top-p truncated softmax), not
the same tokens. Stopping criteria see the verifier's raw logits as ``scores`` (Hugging Face passes the warped ones
when it samples).

The built ``KangarooDVI`` (split model, drafter, caches, learner) is kept on the model object per setting, so
repeated calls do not rebuild it (a changed ``lora`` file is reloaded). One sequence only: a batch, beams, several
return sequences, a logits processor other than the temperature / top-k / top-p warpers (a penalty, min_p, a
processor you pass) or a padded attention mask get one clear error.
"""
from __future__ import annotations

import inspect
import os
import sys

import torch

from common.errors import UserError
from dvi.config import DVIConfig
from kangaroo.drafter_config import DrafterConfig
from kangaroo.sampling import GREEDY, SamplingParams

CACHE_ATTR = "_kangaroo_dvi"
SEED_RANGE = 2 ** 63 - 1   # a seed drawn from a torch generator lies in [0, SEED_RANGE)
WARPERS = {"TemperatureLogitsWarper": "temperature", "TopKLogitsWarper": "top_k", "TopPLogitsWarper": "top_p"}


def generate(model, input_ids: torch.Tensor, logits_processor=None, stopping_criteria=None, generation_config=None,
             *, exit_layer: int | None = None, lora: str | None = None, drafter: DrafterConfig | None = None,
             dvi: DVIConfig | None = None, seed: int | None = None, generator: torch.Generator | None = None,
             **model_kwargs):
    """``custom_generate`` for ``GenerationMixin.generate``: Kangaroo-DVI decoding, equal to greedy decoding, or
    (``do_sample=True``) to this project's plain sampling with the same params and seed."""
    check_supported(model, input_ids, generation_config, model_kwargs)
    sampling = sampling_params(generation_config, logits_processor, seed, generator)
    kd = kangaroo_for(model, exit_layer=exit_layer, lora=lora, drafter=drafter, dvi=dvi)
    streamer = model_kwargs.pop("streamer", None) or caller_streamer()  # passed on by a later transformers, or not
    prompt_len = input_ids.shape[1]
    budget = generation_config.max_length - prompt_len
    rule = CriteriaStop(stopping_criteria, input_ids, budget)
    on_commit = (lambda toks: streamer.put(torch.tensor(toks, dtype=torch.long))) if streamer is not None else None
    res = kd.decode(input_ids.to(kd.model.device), budget, stop_rule=rule, on_commit=on_commit, on_block=rule.see,
                    sampling=sampling)
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


def check_supported(model, input_ids, generation_config, model_kwargs) -> None:
    """One clear error for what this one-sequence decoder cannot reproduce."""
    if getattr(model.config, "model_type", None) != "llama":
        raise UserError(f"kangaroo_dvi.hf.generate needs a Llama-family model; this one is "
                        f"{getattr(model.config, 'model_type', None)!r}: call generate without custom_generate")
    gc = generation_config
    wrong = [f"{k}={getattr(gc, k)}" for k, ok in (("num_beams", 1), ("num_return_sequences", 1))
             if getattr(gc, k, ok) not in (ok, None)]
    if wrong:
        raise UserError(f"kangaroo_dvi.hf.generate decodes one answer per prompt (greedy or sampled); got "
                        f"{', '.join(wrong)}: leave them at num_beams=1, num_return_sequences=1")
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise UserError(f"kangaroo_dvi.hf.generate decodes one sequence at a time (batch size 1); got input_ids of "
                        f"shape {list(input_ids.shape)}: call generate once per prompt")
    if model_kwargs.get("attention_mask") is not None:
        raise UserError("kangaroo_dvi.hf.generate got a padded attention_mask (it has zeros): pass the prompt "
                        "without padding (one sequence, batch size 1)")
    cache = model_kwargs.get("cache")
    if cache is not None and getattr(cache, "_is_user_defined", False) and cache.get_seq_length() > 0:
        raise UserError("kangaroo_dvi.hf.generate keeps its own caches: do not pass a filled past_key_values/cache")


def sampling_params(generation_config, logits_processor, seed: int | None, generator) -> SamplingParams:
    """The ``SamplingParams`` of this call: greedy unless ``do_sample``; sampled, the temperature, top-k and top-p of
    the warpers ``generate`` prepared (absent: 1, 0, 1) and the seed (``seed``, else drawn from ``generator``, else
    from torch's global generator). Any other logits processor is one clear error."""
    found: dict = {}
    for proc in logits_processor or ():
        name = WARPERS.get(type(proc).__name__)
        if name is None or getattr(proc, "min_tokens_to_keep", 1) != 1:
            raise UserError(f"kangaroo_dvi.hf.generate verifies the model's own tokens (greedy, or sampled with "
                            f"temperature, top_k and top_p), so the logits processor {type(proc).__name__} is not "
                            "supported: drop the generation option that adds it")
        found[name] = getattr(proc, name)
    if not getattr(generation_config, "do_sample", False):
        return GREEDY  # the warpers leave the argmax as it is
    if seed is None:
        device = generator.device if generator is not None else "cpu"
        seed = int(torch.randint(SEED_RANGE, (1,), generator=generator, device=device))
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise UserError(f"kangaroo_dvi.hf.generate: seed={seed!r} is not an integer: pass an int (or generator=)")
    return SamplingParams(temperature=float(found.get("temperature", 1.0)), top_p=float(found.get("top_p", 1.0)),
                          top_k=int(found.get("top_k", 0)), seed=seed)


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
