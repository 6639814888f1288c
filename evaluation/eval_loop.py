"""The loop both drivers share: questions -> chat prompts -> decode each turn -> answer file -> summary.

A driver supplies ``decode(input_ids) -> DecodeResult``; this module owns the multi-turn conversation, timing,
resume (questions already in the answer file are skipped), the progress bar and the closing summary.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from evaluation.answers import answer_record, answer_store, default_answer_file
from evaluation.questions import chat_prompt_ids, load_questions
from common.errors import UserError
from kangaroo.greedy import DecodeResult
from kangaroo.timing import timed


@dataclass
class RunTotals:
    new_tokens: int = 0
    wall_time: float = 0.0
    steps: int = 0
    drafter_ms: float = 0.0
    verifier_ms: float = 0.0
    questions: int = 0
    skipped: int = 0
    accept_lengths: list = field(default_factory=list)

    def add(self, res: DecodeResult, wall: float) -> None:
        self.new_tokens += len(res.tokens)
        self.wall_time += wall
        self.steps += res.steps
        self.drafter_ms += res.drafter_ms
        self.verifier_ms += res.verifier_ms
        self.accept_lengths.extend(res.accept_lengths)

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.wall_time if self.wall_time else 0.0

    @property
    def mean_accepted(self) -> float:
        return self.new_tokens / self.steps if self.steps else 0.0

    def summary(self, method: str) -> str:
        return (f"[{method}] {self.questions} questions ({self.skipped} already answered), {self.new_tokens} new "
                f"tokens in {self.wall_time:.1f}s = {self.tokens_per_s:.2f} tok/s, mean accepted length "
                f"{self.mean_accepted:.3f} over {self.steps} verifier steps")


def check_fits(ids: torch.Tensor, max_new_tokens: int, max_positions: int | None, question_id) -> None:
    """The prompt plus the answer must fit the model's positions (past them RoPE models produce garbage)."""
    n = ids.shape[1]
    if max_positions is not None and n + max_new_tokens > max_positions:
        raise UserError(f"question {question_id}: its prompt is {n} tokens and --max-new-tokens {max_new_tokens} "
                        f"more exceed the model's {max_positions} positions: lower --max-new-tokens to at most "
                        f"{max(0, max_positions - n)} or leave that question out (answers so far are kept)")


def decode_turns(decode: Callable[[torch.Tensor], DecodeResult], tokenizer, model_id: str, turns: list[str],
                 device, fits: Callable[[torch.Tensor], None] | None = None, after_turn=None
                 ) -> tuple[list[str], list[DecodeResult], list[float]]:
    """Multi-turn: each turn's prompt holds the earlier turns and the model's own earlier answers.
    ``after_turn(ids, result, wall)`` runs after each timed decode, outside its time (e.g. a greedy reference)."""
    messages, texts, results, walls = [], [], [], []
    for turn in turns:
        messages.append({"role": "user", "content": turn})
        ids = chat_prompt_ids(tokenizer, messages, model_id, device=device)
        if fits is not None:
            fits(ids)
        res, wall = timed(lambda: decode(ids), device)
        if after_turn is not None:
            after_turn(ids, res, wall)
        walls.append(wall)
        text = tokenizer.decode(res.tokens, skip_special_tokens=True).strip()
        messages.append({"role": "assistant", "content": text})
        texts.append(text)
        results.append(res)
    return texts, results, walls


def sharegpt_questions(path: str, max_prompts: int | None):
    """The first ``max_prompts`` usable prompts of a ShareGPT jsonl as one-turn questions, one at a time."""
    from data.sharegpt_stream import iter_sharegpt_jsonl

    for i, (prompt, _target) in enumerate(iter_sharegpt_jsonl(path)):
        if max_prompts is not None and i >= max_prompts:
            return
        yield {"question_id": f"sharegpt-{i}", "category": "sharegpt", "turns": [prompt]}


def run_questions(args, method: str, decode: Callable[[torch.Tensor], DecodeResult], tokenizer,
                  extra_record: Callable[[], dict] | None = None,
                  warmup: Callable[[torch.Tensor], DecodeResult] | None = None,
                  max_positions: int | None = None, after_turn=None) -> RunTotals:
    """Decode every question of ``--question-file`` (or every prompt streamed from ``--prompts-jsonl``);
    a prompt that with ``--max-new-tokens`` exceeds ``max_positions`` ends the run with a UserError.
    ``after_turn``: see ``decode_turns``."""
    if getattr(args, "prompts_jsonl", None):
        questions, total, bench = sharegpt_questions(args.prompts_jsonl, args.max_prompts), args.max_prompts, "sharegpt"
    else:
        questions = load_questions(args.question_file, args.question_begin, args.question_end,
                                   getattr(args, "categories", None), getattr(args, "exclude_categories", None))
        total, bench = len(questions), args.bench_name
        if not questions:
            raise UserError(f"no question selected from {args.question_file} (--question-begin/--question-end "
                            "past its end, --categories/--exclude-categories leaving none, or an empty file): "
                            "check the file, the range and the categories")
    answer_file = args.answer_file or default_answer_file(bench, args.model_id, method)
    args.answer_file = answer_file
    store = answer_store(answer_file)
    if args.overwrite:
        store.reset()
    done = store.done_ids()
    totals = RunTotals()
    # one short untimed decode so the first question does not pay for lazy initialisation
    hi = chat_prompt_ids(tokenizer, [{"role": "user", "content": "Hi"}], args.model_id, device=args.device)
    (warmup or decode)(hi[:, -8:])
    from tqdm import tqdm

    for q in tqdm(questions, total=total, desc=method, disable=args.no_progress, dynamic_ncols=True):
        if q["question_id"] in done:
            totals.skipped += 1
            continue
        texts, results, walls = decode_turns(
            decode, tokenizer, args.model_id, q["turns"], args.device,
            fits=lambda ids, qid=q["question_id"]: check_fits(ids, args.max_new_tokens, max_positions, qid),
            after_turn=after_turn)
        accept = [a for r in results for a in r.accept_lengths]
        rec = answer_record(q["question_id"], args.model_id, texts, [len(r.tokens) for r in results], walls,
                            accept, [r.steps for r in results], category=q.get("category"),
                            token_ids=[r.tokens for r in results], **(extra_record() if extra_record else {}))
        store.append(rec)
        for r, w in zip(results, walls):
            totals.add(r, w)
        totals.questions += 1
    print(totals.summary(method))
    print(f"[{method}] answers: {answer_file}")
    return totals
