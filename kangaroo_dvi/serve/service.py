"""The server's parts, built once from the flags (``load_service``), and what the HTTP routes ask of them:

    request -> tokens   chat messages through the model's chat template, exactly as the drivers render a question
                        (``evaluation.questions.chat_prompt_ids``), or a completion prompt's text / token ids
    length checks       prompt and max_tokens against the model's context (a 400 naming the largest that fits)
    submit              a ``Sequence`` into the scheduler's bounded queue (full: 503 + Retry-After)
    health, close       status for GET /health; the bounded drain and the final checkpoint at shutdown

The model, drafter and learner are built as the driver builds them (``evaluation/inference_kangaroo.py``), so a
flag means the same thing in both, and a response equals the baseline driver's answer to the same question.
"""
from __future__ import annotations

from pathlib import Path

import torch

from kangaroo_dvi.serve.config import ServeConfig
from kangaroo_dvi.serve.drafting import DrafterFactory
from kangaroo_dvi.serve.learning import RunRecord, ServeLearner
from kangaroo_dvi.serve.metrics import ServeMetrics
from kangaroo_dvi.serve.request_state import Sequence
from kangaroo_dvi.serve.scheduler import QueueFull, Scheduler
from kangaroo_dvi.serve.schemas import RequestError, bad
from kangaroo_dvi.serve.text_stream import TextStream


class ServeService:
    def __init__(self, cfg: ServeConfig, model, tokenizer, eos: set[int], factory: DrafterFactory,
                 learner: ServeLearner | None, record: RunRecord | None = None, print_fn=print):
        self.cfg, self.model, self.tokenizer, self.eos = cfg, model, tokenizer, eos
        self.factory, self.learner, self.record = factory, learner, record
        self.name = cfg.served_model_name
        self.max_positions = int(model.config.max_position_embeddings)
        self.metrics = ServeMetrics(learner, factory.sources)
        self.scheduler = Scheduler(model, factory, cfg.max_batch, cfg.queue_size, learner, self.metrics, print_fn,
                                   cost=factory.cost)
        self.metrics.state = self.scheduler.state
        self.closing = False
        self.summary: dict = {}   # the learner's, after close()

    # ------------------------------------------------------------------------------ request -> tokens
    def chat_ids(self, messages: list[dict]) -> torch.Tensor:
        from evaluation.questions import chat_prompt_ids

        try:
            return chat_prompt_ids(self.tokenizer, messages, self.model.model_id, device=self.model.device)
        except Exception as e:  # the template refused these messages (e.g. roles out of order)
            raise bad(f"the model's chat template cannot render these messages ({type(e).__name__}: {e})",
                      "messages") from e

    def prompt_ids(self, prompt) -> torch.Tensor:
        if isinstance(prompt, str):
            ids = self.tokenizer(prompt).input_ids
        else:
            vocab = self.model.config.vocab_size
            if any(not isinstance(t, int) or not 0 <= t < vocab for t in prompt):
                raise bad(f"prompt token ids must be integers in 0..{vocab - 1}", "prompt")
            ids = list(prompt)
        return torch.tensor([ids], dtype=torch.long, device=self.model.device)

    def budget(self, ids: torch.Tensor, requested: int | None, param: str) -> int:
        """max_tokens for a prompt of ``ids``: the requested one if it fits the context, else a 400."""
        n, ctx = ids.shape[1], self.max_positions
        if n == 0:
            raise bad("the prompt is empty: send at least one token of text", param)
        if n >= ctx:
            raise bad(f"the prompt is {n} tokens but the model's context is {ctx} positions: shorten the prompt",
                      param, "context_length_exceeded")
        room = ctx - n
        if requested is None:
            return min(self.cfg.max_new_tokens, room)
        if requested > room:
            raise bad(f"max_tokens {requested} does not fit: the {n}-token prompt leaves {room} of the model's {ctx} "
                      f"positions; pass max_tokens <= {room}", "max_tokens", "context_length_exceeded")
        return requested

    # ------------------------------------------------------------------------------ into the scheduler
    def submit(self, ids: torch.Tensor, max_tokens: int, stop: list[str], sink) -> Sequence:
        seq = Sequence(prompt=ids, max_tokens=max_tokens, text=TextStream(self.tokenizer, stop), sink=sink,
                       eos=self.eos)
        try:
            self.scheduler.submit(seq)
        except QueueFull as e:
            raise RequestError(503, str(e), code="server_busy", headers={"Retry-After": str(e.retry_after)}) from e
        return seq

    def health(self) -> dict:
        waiting, in_flight = self.scheduler.state()
        return {"status": "draining" if self.closing else "ok", "model": self.name, "waiting": waiting,
                "in_flight": in_flight, "max_batch": self.cfg.max_batch, "queue_size": self.cfg.queue_size,
                "drafter": self.factory.metadata(), **(self.learner.status() if self.learner else {"online": False})}

    def start(self) -> None:
        self.scheduler.start()

    def close(self) -> dict:
        """Let requests in flight finish (up to --drain-timeout), then the final checkpoint and the run record."""
        self.closing = True
        left = self.scheduler.close(self.cfg.drain_timeout)
        summary = self.summary = self.learner.finish() if self.learner is not None else {}
        if self.record is not None:
            self.record.stop(cancelled_at_shutdown=left, final=summary.get("final"),
                             global_step=summary.get("blocks"), trainer_steps=summary.get("train_steps"))
        return summary


def load_service(args, cfg: ServeConfig, argv: list[str], print_fn=print) -> ServeService:
    """Tokenizer, model (+ a deployed or learning drafter head), drafter factory, warm-up (builds the engine)."""
    from evaluation.cli import drafter_config, dvi_config
    from evaluation.inference_kangaroo import build_model
    from kangaroo.drafter_config import apply_drafter_vocab, attach_feature
    from kangaroo.greedy import eos_ids_of
    from kangaroo.model_loading import load_tokenizer

    torch.manual_seed(args.seed)
    tokenizer = load_tokenizer(args.model_id)
    model = build_model(args)
    dcfg = drafter_config(args)
    apply_drafter_vocab(dcfg, model, tokenizer, print_fn)
    dvi = dvi_config(args) if args.dvi_online or args.load_lora else None
    attach_feature(model, dcfg, dvi and dvi.lora, args.dvi_online)  # before the learner: it trains or loads it
    learner = ServeLearner(model, dvi, print_fn) if dvi is not None else None
    factory = DrafterFactory(dcfg, model, online=args.dvi_online, print_fn=print_fn)
    if learner is not None:
        learner.bind(factory)
    eos = eos_ids_of(tokenizer, model.config)
    warm_up(model, eos)
    record = RunRecord(Path(cfg.state_dir) / "run.json", argv, learner.resumed_from if learner else None)
    return ServeService(cfg, model, tokenizer, eos, factory, learner, record, print_fn)


def warm_up(model, eos: set[int]) -> None:
    """One short untimed decode with a throwaway drafter: builds (or loads) the engine before /health says ok."""
    from kangaroo.speculative import kangaroo_generate

    kangaroo_generate(model, torch.tensor([[1, 2, 3, 4]], device=model.device) % model.config.vocab_size, 4, eos)
