"""A warm start for the feature drafter: trained offline before an online run, with the online run's trainer,
objective and tuples, on prompts that no run trains on or is evaluated on; saved as a deployable DVI checkpoint that
an online run starts its drafters from (``--dvi-warm-start PATH``) and then keeps improving online.

    python -m scripts.warm_start      # -> .cache/warm_start/<model>.pt: minutes, cached (a second call returns)

Data (``collect``): prompts ``begin .. end - 1`` of a ShareGPT jsonl (default the bundled slice's 1000..1999: the
main job trains on its first 150, the server's load run on its first ~400, the held-out set starts at 2000), each
rendered with the model's chat template (its last ``prompt_tokens``) and answered by the model itself, greedily
(``source`` greedy: the text it drafts online; ``replies`` takes the conversations' own replies instead, with no
decoding, and measured worse: ``runs/exp_warm_start``). Each sequence gives the rows the online loop would push
(``prefill_positions`` of the prompt's, every answer row), each with the verifier's top-``topk`` logits
(``dvi/offline_data.py``). The trainer (``train``) takes ``epochs`` passes over them in random batches; ``evaluate``
(optional) is called every ``eval_every`` steps and at the end (the offline ceiling's held-out
curve). The self-drafter's LoRA head is saved untrained (B = 0): the warm start is the feature drafter's.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from common.config_fields import above, at_least, check_fields, setting
from common.errors import ConfigError
from dvi.config import ScheduleConfig, TrainerConfig
from dvi.offline_data import capture, make_batch, scored_positions, tuples

DEFAULT_DIR = ".cache/warm_start"
SOURCES = ("greedy", "replies")
GENERATE_BATCH = 16  # prompts a greedy batch (sorted by length): ~2x one prompt at a time on 2 cores


@dataclass(frozen=True)
class WarmStartConfig:
    prompts_jsonl: str = setting("assets/sharegpt.jsonl", flag="--prompts-jsonl",
                                 help="ShareGPT jsonl whose prompts and replies the warm start trains on")
    begin: int = setting(1000, flag="--begin", rule=at_least(0),
                         help="first prompt of the file (default 1000: past what the main job, the server's load "
                              "run and the benchmark train on, before the held-out set's 2000)")
    end: int = setting(2000, flag="--end", rule=at_least(1), help="one past the last prompt")
    prompt_tokens: int = setting(480, flag="--prompt-tokens", rule=at_least(2),
                                 help="a prompt's last N chat-template tokens")
    source: str = setting("greedy", flag="--source", choices=SOURCES,
                          help="greedy: the model's own greedy answers (what it drafts online; measured better); "
                               "replies: the conversations' replies, teacher-forced (no decoding: faster)")
    answer_tokens: int = setting(64, flag="--answer-tokens", rule=at_least(2),
                                 help="an answer's first N tokens (every one a training row)")
    prefill_positions: int = setting(32, flag="--prefill-positions", rule=at_least(0),
                                     help="prompt rows per sequence, as --dvi-prefill-positions")
    topk: int = setting(64, flag="--topk", rule=at_least(1), help="the verifier's top-K logits kept per row")
    epochs: float = setting(3.0, flag="--epochs", rule=above(0), help="passes over the rows")
    lr: float = setting(3e-4, flag="--lr", rule=above(0), help="AdamW learning rate (as --dvi-feature-lr)")
    batch_size: int = setting(64, flag="--batch-size", rule=at_least(1))
    seed: int = setting(0, flag="--seed")

    def __post_init__(self):
        check_fields(self)
        if self.end <= self.begin:
            raise ConfigError(f"--end {self.end} must be above --begin {self.begin}: the warm start's prompts are "
                              "begin .. end - 1")


def conversations(cfg: WarmStartConfig, tokenizer, model_id: str) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, reply ids) of prompts ``cfg.begin .. cfg.end - 1``: the prompt's last ``prompt_tokens``, the
    conversation's own reply's first ``answer_tokens``."""
    from data.sharegpt_stream import iter_sharegpt_jsonl
    from kangaroo.chat import chat_prompt_ids

    out = []
    for i, (prompt, reply) in enumerate(iter_sharegpt_jsonl(cfg.prompts_jsonl)):
        if i >= cfg.end:
            break
        if i >= cfg.begin:
            ids = chat_prompt_ids(tokenizer, [{"role": "user", "content": prompt}], model_id)[0].tolist()
            reply_ids = tokenizer(reply, add_special_tokens=False).input_ids
            out.append((ids[-cfg.prompt_tokens:], reply_ids[:cfg.answer_tokens]))
    return out


@torch.no_grad()
def greedy_answers(lm, prompts: list[list[int]], max_new_tokens: int, eos: set[int], batch: int = GENERATE_BATCH,
                   pad: int = 0) -> list[list[int]]:
    """The model's greedy answers to ``prompts`` (up to the first EOS, kept), ``batch`` prompts of similar length at
    a time, left-padded (Hugging Face ``generate``): training text, where a batch's rounding may differ from one
    prompt's decode in a late token, which costs nothing here."""
    order, out = sorted(range(len(prompts)), key=lambda k: len(prompts[k])), [[] for _ in prompts]
    for at in range(0, len(order), batch):
        group = order[at:at + batch]
        width = max(len(prompts[k]) for k in group)
        ids = torch.tensor([[pad] * (width - len(prompts[k])) + prompts[k] for k in group], device=lm.device)
        mask = torch.tensor([[0] * (width - len(prompts[k])) + [1] * len(prompts[k]) for k in group], device=lm.device)
        gen = lm.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                          pad_token_id=pad, eos_token_id=sorted(eos) or None).tolist()
        for row, k in zip(gen, group):
            answer = row[width:]
            end = next((i for i, t in enumerate(answer) if t in eos), None)
            out[k] = answer if end is None else answer[:end + 1]
    return out


def collect(model, tokenizer, cfg: WarmStartConfig, log=print) -> list[dict]:
    """The warm start's sequences (``dvi/offline_data.py``): each prompt with the model's greedy answer (``source``
    greedy) or the conversation's reply (replies), then one verifier pass each."""
    t0, seqs = time.time(), []
    pairs = conversations(cfg, tokenizer, model.model_id)
    if cfg.source == "greedy":
        from kangaroo.greedy import eos_ids_of

        eos = eos_ids_of(tokenizer, model.config)
        answers = greedy_answers(model.base_model, [p for p, _ in pairs], cfg.answer_tokens, eos,
                                 pad=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        pairs = [(p, a) for (p, _), a in zip(pairs, answers)]
        log(f"[warm-start] {len(pairs)} greedy answers, {sum(len(a) for _, a in pairs)} tokens "
            f"({time.time() - t0:.0f}s)")
    for prompt, answer in pairs:
        if len(answer) < 2:
            continue
        seqs.append(capture(model, prompt + answer, len(prompt),
                            scored_positions(len(prompt), len(answer), cfg.prefill_positions), cfg.topk))
    log(f"[warm-start] {len(seqs)} sequences, {sum(len(s['pos']) for s in seqs)} rows ({time.time() - t0:.0f}s)")
    return seqs


def train(model, seqs: list[dict], cfg: WarmStartConfig, *, bf16: bool = True, kd_top1: float = 1.0,
          rkl: float = 1.0, grad_clip: float | None = 1.0, evaluate: Callable[[], float] | None = None,
          eval_every: int = 500, log=print) -> list[dict]:
    """Train ``model.feature_drafter`` on ``seqs`` (KD on the verifier's top-K, reverse KL and top-1 distillation:
    the online objective's KD side; every row is KD-only, as dense rows are online). Returns the curve
    [{step, epoch, examples, loss, top1?}] (top1: ``evaluate()``, when given)."""
    from dvi.online_trainer import OnlineTrainer
    from dvi.presets import LossPreset
    from dvi.trainable_parts import FeaturePart

    trainer = OnlineTrainer(FeaturePart(model.feature_drafter, bf16=bf16),
                            TrainerConfig(lr=cfg.lr, kd_top1=kd_top1, max_ms=None), ScheduleConfig(warmup=0),
                            model.config.vocab_size, preset=LossPreset(kd=1.0, rkl=rkl, ce=0.0, pg=0.0),
                            grad_clip=grad_clip)
    items, window = tuples(seqs), model.feature_drafter.window
    g = torch.Generator().manual_seed(cfg.seed)
    total = max(1, int(cfg.epochs * len(items) / cfg.batch_size))
    curve = [{"step": 0, "epoch": 0.0, "examples": 0, **({"top1": evaluate()} if evaluate else {})}]
    log(f"[warm-start] {len(items)} training rows, {total} steps of {cfg.batch_size}"
        + (f"; held-out top-1 at start {curve[0]['top1']:.4f}" if evaluate else ""))
    order, at, t0 = [], 0, time.time()
    for step in range(1, total + 1):
        if at + cfg.batch_size > len(order):
            order, at = torch.randperm(len(items), generator=g).tolist(), 0
        stats = trainer.step(make_batch(seqs, [items[i] for i in order[at:at + cfg.batch_size]], window), step)
        at += cfg.batch_size
        if step % eval_every == 0 or step == total:
            row = {"step": step, "epoch": step * cfg.batch_size / len(items), "examples": step * cfg.batch_size,
                   "loss": stats["loss"]}
            if evaluate:
                row["top1"] = evaluate()
            curve.append(row)
            log(f"[warm-start] step {step} epoch {row['epoch']:.2f}: loss {row['loss']:.3f}"
                + (f", held-out top-1 {row['top1']:.4f}" if evaluate else "") + f" ({time.time() - t0:.0f}s)")
    return curve


def save(path: Path, model, cfg: WarmStartConfig, curve: list[dict]) -> None:
    """A deployable DVI checkpoint of ``model``'s drafters (no optimizer state: an online run starts its own),
    its settings and curve in ``extra["warm_start"]``."""
    from dvi.checkpoint import save_ckpt

    path.parent.mkdir(parents=True, exist_ok=True)
    save_ckpt(path, model, None, None, 0.0, global_step=0,
              extra={"warm_start": {"settings": asdict(cfg), "steps": curve[-1]["step"],
                                    "loss": float(curve[-1].get("loss", 0.0))}})


def cached_settings(path: Path) -> dict | None:
    """The settings a warm-start checkpoint at ``path`` was built with (None: no such file, or not a warm start)."""
    if not path.is_file():
        return None
    from dvi.deploy import peek_deployment

    meta = peek_deployment(path)
    found = (meta.extra.get("warm_start") or {}) if meta is not None else {}
    return found.get("settings")
