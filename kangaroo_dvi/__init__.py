"""Kangaroo-DVI as a library: load a model (+ a trained drafter), generate, optionally learn while generating.

    from kangaroo_dvi import KangarooDVI
    from dvi.config import DVIConfig

    kd = KangarooDVI.load("smollm2-135m", lora="runs/main/checkpoints/final.pt")   # deploy a trained drafter
    print(kd.generate("Write a haiku about the sea.", max_new_tokens=32).text)

    kd = KangarooDVI.load("smollm2-135m", dvi=DVIConfig(online=True))              # learn online while serving
    kd.generate("Explain rain.")
    kd.heldout.latest()                                 # its held-out agreement now (DVIConfig.heldout: the set)
    kd.close()                                                                       # final checkpoint + metrics

    kd.generate("Write a haiku.", temperature=0.7, top_p=0.95, seed=1)               # sampled (greedy by default)
    kd.generate("Write a haiku.", sampling=SamplingParams(temperature=0.7, seed=1))  # the same, as one value

Every output equals the model's own greedy output, whatever the drafter; sampled, it equals plain sampling
(``kangaroo.greedy.greedy_decode(..., sampling=)``, the baseline driver's ``--temperature``) with the same params and
seed, token for token (``kangaroo/sampling.py``). The session is built as every entry point
builds it (``kangaroo_dvi.session.build_session``: a ``SessionConfig``, a ``DrafterConfig`` and a ``DVIConfig``;
``KangarooDVI.from_session`` takes one built so).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from common.errors import ConfigError
from dvi.config import DVIConfig
from kangaroo.drafter_config import DrafterConfig
from kangaroo.sampling import GREEDY, SamplingParams
from kangaroo_dvi.session import Session, build_session
from kangaroo_dvi.session_config import SessionConfig

__all__ = ["KangarooDVI", "Generation", "DVIConfig", "DrafterConfig", "SamplingParams", "SessionConfig", "ConfigError",
           "sampling_of"]


@dataclass
class Generation:
    tokens: list[int]            # the new token ids (== greedy decoding's, or plain sampling's with the same seed)
    text: str | None             # decoded, when a tokenizer is known
    accept_lengths: list[int]    # tokens committed per verifier pass
    sampling: SamplingParams = GREEDY   # what they were decoded under


def sampling_of(sampling: SamplingParams | None = None, *, temperature: float | None = None,
                top_p: float | None = None, top_k: int | None = None, seed: int | None = None) -> SamplingParams:
    """One ``SamplingParams`` from either a whole value or keywords (those left out: ``SamplingParams``' defaults,
    greedy at temperature 0, seed 0); both at once is a ``ConfigError``. A bad value is ``SamplingParams``' own
    ``ConfigError`` (it names the command-line flag, as every config does)."""
    given = {k: v for k, v in (("temperature", temperature), ("top_p", top_p), ("top_k", top_k), ("seed", seed))
             if v is not None}
    if sampling is not None and given:
        raise ConfigError(f"pass either sampling= or {', '.join(given)}=, not both")
    return sampling if sampling is not None else SamplingParams(**given)


class KangarooDVI:
    def __init__(self, model, tokenizer, drafter, eos: set[int], learner=None):
        self.model, self.tokenizer, self.drafter, self.eos, self.learner = model, tokenizer, drafter, eos, learner
        from kangaroo.cache_pool import ReusableCaches

        self._pool = ReusableCaches(model.new_caches)

    @classmethod
    def from_session(cls, session: Session) -> "KangarooDVI":
        return cls(session.model, session.tokenizer, session.drafter, session.eos, session.learner)

    @classmethod
    def load(cls, model_id: str, *, exit_layer: int | None = None, lora: str | None = None,
             dvi: DVIConfig | None = None, drafter: DrafterConfig | None = None, device: str = "cpu",
             dtype: str = "float32", base_model=None, tokenizer=None, print_fn=print) -> "KangarooDVI":
        """``model_id``: as ``--model-id`` (``base_model``: an already loaded Llama instead). ``lora``: a trained
        drafter checkpoint to deploy (with ``dvi``: to resume; online without one, the newest checkpoint of
        ``dvi.io.save_dir`` is resumed). ``dvi``: learn online (``DVIConfig(online=True)``). ``exit_layer``:
        shorthand for ``drafter.exit_layer``. The checkpoint decides what it was trained with (a trained adapter and
        its window, a pruned drafter vocabulary, the LoRA shape when deployed). The configs checked their own values
        when they were made; here they are checked against the model's config, as the command line does (a
        ``ConfigError`` with the same one line). The process's torch seed is left as it is."""
        dcfg = drafter or DrafterConfig(model_id=model_id)
        if exit_layer is not None:
            dcfg = replace(dcfg, exit_layer=exit_layer)
        session_cfg = SessionConfig(model_id=model_id, device=device, dtype=dtype, seed=None,
                                    drafter_checkpoint=str(lora) if lora else "")
        return cls.from_session(build_session(session_cfg, dcfg, dvi, base_model=base_model, tokenizer=tokenizer,
                                              print_fn=print_fn))

    @property
    def heldout(self):
        """The held-out evaluation (``dvi.heldout_eval.HeldoutEval``: ``latest()``, ``summary()``), or None."""
        return self.learner.heldout if self.learner is not None else None

    def prompt_ids(self, prompt) -> torch.Tensor:
        """A chat prompt (str), or token ids (list or [1, n] tensor), as [1, n] ids on the model's device."""
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("a text prompt needs a tokenizer: pass token ids, or load by model id")
            from kangaroo.chat import chat_prompt_ids

            return chat_prompt_ids(self.tokenizer, [{"role": "user", "content": prompt}], self.model.model_id,
                                   device=self.model.device)
        ids = torch.as_tensor(prompt, device=self.model.device)
        return ids if ids.dim() == 2 else ids[None]

    def generate(self, prompt, max_new_tokens: int = 128, *, sampling: SamplingParams | None = None,
                 temperature: float | None = None, top_p: float | None = None, top_k: int | None = None,
                 seed: int | None = None) -> Generation:
        """Decode ``prompt`` (``prompt_ids``). Greedy by default; ``sampling`` (a ``SamplingParams``) or the keywords
        ``temperature``, ``top_p``, ``top_k``, ``seed`` (``sampling_of``) sample, equal to plain sampling with them."""
        params = sampling_of(sampling, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed)
        res = self.decode(self.prompt_ids(prompt), max_new_tokens, sampling=params)
        text = self.tokenizer.decode(res.tokens, skip_special_tokens=True) if self.tokenizer is not None else None
        return Generation(res.tokens, text, res.accept_lengths, params)

    def decode(self, input_ids: torch.Tensor, max_new_tokens: int, stop_rule=None, on_commit=None, on_block=None,
               sampling: SamplingParams = GREEDY):
        """``kangaroo.speculative.kangaroo_generate`` with this drafter, the learner's hooks (when learning) and the
        kept caches: a ``DecodeResult``. ``stop_rule``/``on_commit`` as there; ``on_block`` sees each block first;
        ``sampling``: greedy by default, else equal to plain sampling with the same params and seed."""
        from kangaroo.speculative import kangaroo_generate

        lr = self.learner
        hooks = [h for h in (on_block, lr.on_block if lr else None) if h is not None]
        return kangaroo_generate(self.model, input_ids, max_new_tokens, self.eos, drafter=self.drafter,
                                 on_block=(lambda blk: [h(blk) for h in hooks]) if hooks else None,
                                 cache_pool=self._pool, on_prefill=lr.on_prefill if lr else None,
                                 prefill_positions=lr.prefill_positions if lr else 0, stop_rule=stop_rule,
                                 on_commit=on_commit, sampling=sampling)

    def close(self) -> dict | None:
        """Online: save DIR/final.pt and the metrics; returns the learner's summary (None when not learning)."""
        return self.learner.finish() if self.learner is not None else None
