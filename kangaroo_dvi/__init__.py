"""Kangaroo-DVI as a library: load a model (+ a trained drafter), generate, optionally learn while generating.

    from kangaroo_dvi import KangarooDVI
    from dvi.config import DVIConfig

    kd = KangarooDVI.load("smollm2-135m", lora="runs/main/checkpoints/final.pt")   # deploy a trained drafter
    print(kd.generate("Write a haiku about the sea.", max_new_tokens=32).text)

    kd = KangarooDVI.load("smollm2-135m", dvi=DVIConfig(online=True))              # learn online while serving
    kd.generate("Explain rain.")
    kd.close()                                                                       # final checkpoint + metrics

Every output equals the model's own greedy output, whatever the drafter. The same parts as the drivers:
``KangarooModel``, ``DrafterConfig`` -> drafter, ``DVIConfig`` -> ``DVILearner``, ``dvi.deploy.deploy_drafter``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from common.config_fields import check_against_model
from common.errors import ConfigError
from dvi.config import DVIConfig
from kangaroo.drafter_config import DrafterConfig, apply_drafter_vocab, attach_feature, build_drafter

__all__ = ["KangarooDVI", "Generation", "DVIConfig", "DrafterConfig", "ConfigError"]


@dataclass
class Generation:
    tokens: list[int]            # the new token ids (== greedy decoding's)
    text: str | None             # decoded, when a tokenizer is known
    accept_lengths: list[int]    # tokens committed per verifier pass


class KangarooDVI:
    def __init__(self, model, tokenizer, drafter, eos: set[int], learner=None):
        self.model, self.tokenizer, self.drafter, self.eos, self.learner = model, tokenizer, drafter, eos, learner
        from kangaroo.cache_pool import ReusableCaches

        self._pool = ReusableCaches(model.new_caches)

    @classmethod
    def load(cls, model_id: str, *, exit_layer: int | None = None, lora: str | None = None,
             dvi: DVIConfig | None = None, drafter: DrafterConfig | None = None, device: str = "cpu",
             dtype: str = "float32", base_model=None, tokenizer=None, print_fn=print) -> "KangarooDVI":
        """``model_id``: as ``--model-id`` (``base_model``: an already loaded Llama instead). ``lora``: a trained
        drafter checkpoint to deploy (with ``dvi``: to resume). ``dvi``: learn online (``DVIConfig(online=True)``;
        its ``io.load`` resumes). ``exit_layer``: shorthand for ``drafter.exit_layer``. The configs checked their own
        values when they were made; here they are checked against the model's config, as the command line does (a
        ``ConfigError`` with the same one line)."""
        from kangaroo.greedy import eos_ids_of
        from kangaroo.kangaroo_model import KangarooModel
        from kangaroo.model_loading import load_causal_lm, load_tokenizer

        dcfg = drafter or DrafterConfig(model_id=model_id)
        if exit_layer is not None:
            dcfg = replace(dcfg, exit_layer=exit_layer)
        if base_model is None:
            base_model = load_causal_lm(model_id, device=device, dtype=dtype)
            tokenizer = tokenizer or load_tokenizer(model_id)
        check_against_model(base_model.config, dcfg, dvi)
        if dvi is not None and lora and not dvi.io.load:  # learn online from the checkpoint (resume)
            dvi = replace(dvi, io=replace(dvi.io, load=str(lora)))

        def prune(km):
            apply_drafter_vocab(dcfg, km, tokenizer, print_fn)

        learner = None
        if dvi is None and lora:  # deploy: built as the checkpoint needs (its trained adapter too)
            from dvi.deploy import deployed_model

            model = deployed_model(model_id, dcfg.exit_layer, base_model, lora, prune)
        else:
            model = KangarooModel(model_id=model_id, exit_layer=dcfg.exit_layer, base_model=base_model)
            prune(model)
        if dvi is not None:
            from dvi.online_loop import DVILearner
            from kangaroo.drafter_head import attach_drafter_head

            attach_drafter_head(model, r=dvi.lora.r, alpha=dvi.lora.alpha)
            attach_feature(model, dcfg, dvi.lora, dvi.online)
            learner = DVILearner(model, dvi, print_fn=print_fn)
        online = dvi is not None and dvi.online
        eos = eos_ids_of(tokenizer, model.config) if tokenizer is not None else set()
        return cls(model, tokenizer, build_drafter(dcfg, model, print_fn, online=online), eos, learner)

    def prompt_ids(self, prompt) -> torch.Tensor:
        """A chat prompt (str), or token ids (list or [1, n] tensor), as [1, n] ids on the model's device."""
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("a text prompt needs a tokenizer: pass token ids, or load by model id")
            from evaluation.questions import chat_prompt_ids

            return chat_prompt_ids(self.tokenizer, [{"role": "user", "content": prompt}], self.model.model_id,
                                   device=self.model.device)
        ids = torch.as_tensor(prompt, device=self.model.device)
        return ids if ids.dim() == 2 else ids[None]

    def generate(self, prompt, max_new_tokens: int = 128) -> Generation:
        res = self.decode(self.prompt_ids(prompt), max_new_tokens)
        text = self.tokenizer.decode(res.tokens, skip_special_tokens=True) if self.tokenizer is not None else None
        return Generation(res.tokens, text, res.accept_lengths)

    def decode(self, input_ids: torch.Tensor, max_new_tokens: int, stop_rule=None, on_commit=None, on_block=None):
        """``kangaroo.speculative.kangaroo_generate`` with this drafter, the learner's hooks (when learning) and the
        kept caches: a ``DecodeResult``. ``stop_rule``/``on_commit`` as there; ``on_block`` sees each block first."""
        from kangaroo.speculative import kangaroo_generate

        lr = self.learner
        hooks = [h for h in (on_block, lr.on_block if lr else None) if h is not None]
        return kangaroo_generate(self.model, input_ids, max_new_tokens, self.eos, drafter=self.drafter,
                                 on_block=(lambda blk: [h(blk) for h in hooks]) if hooks else None,
                                 cache_pool=self._pool, on_prefill=lr.on_prefill if lr else None,
                                 prefill_positions=lr.prefill_positions if lr else 0, stop_rule=stop_rule,
                                 on_commit=on_commit)

    def close(self) -> dict | None:
        """Online: save DIR/final.pt and the metrics; returns the learner's summary (None when not learning)."""
        return self.learner.finish() if self.learner is not None else None
