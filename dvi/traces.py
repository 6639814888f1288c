"""Verification traces: what a serving engine exports per verified block so that a DVI trainer can run apart from
it (``dvi/sidecar.py``, docs/scale.md). One record per block, plain tensors and numbers:

    inputs        [m+1] int64    x, d_1..d_m (the verify pass's inputs)
    source        "self" | "ngram"; accepted a; committed [a+1] (d_1..d_a, v_a)
    verified      [m+1] int64    the verifier's greedy token after each input (sampled: [a+1], its picks up to
                                 the first rejection)
    top_idx/val   [m+1, K]       the verifier's top-K logits after each input (int32 / float16)
    hk            [m+1, d] f16   the drafter's layer-k features of each input (what its head projects)
    confidences   [m]            the drafter's confidence in each d_i
    declined      (token, conf, hk) the candidate the draft policy declined, or none
    context       trained adapter: the layer-k residuals [c, d] f16 its segments are cut from, first position, window

A trace folder holds shards ``trace_{n:08d}.pt`` (a list of records each), written atomically (temp file, rename),
so a reader never sees half a shard; read with ``weights_only`` (a shard cannot run code). ``record_of(block)`` and
``block_of(record)`` convert: the block rebuilt from a record gives the same training tuples
(``dvi.block_samples``) as the live block, as long as the buffer keeps at most K logits per row. Prompt (prefill)
supervision is not traced.
"""
from __future__ import annotations

from pathlib import Path

import torch

from common.atomic import atomic_write
from kangaroo.blocks import Block, Draft, HiddenContext, Verification
from kangaroo.kangaroo_model import ShallowOut

SHARD = "trace_{:08d}.pt"


def _f16(t):
    return None if t is None else t.detach().to("cpu", torch.float16).clone()


def record_of(blk: Block, topk: int) -> dict:
    """One block as a trace record (the verifier's top-``topk`` logits per row)."""
    d, v = blk.draft, blk.verification
    rows = range(len(d.tokens) + 1)
    hk = [blk.input_hk(j) for j in rows]
    if any(h is None for h in hk):
        raise ValueError("a traced block needs the drafter features of every input (verify computes them)")
    top = torch.topk(v.logits.detach().float().cpu(), min(topk, v.logits.shape[-1]), dim=-1)
    c = blk.context
    return {"inputs": torch.tensor([d.last_token, *d.tokens]), "source": d.source, "accepted": int(blk.accepted),
            "committed": torch.tensor(blk.committed), "verified": torch.tensor(v.tokens),
            "top_idx": top.indices.to(torch.int32), "top_val": top.values.to(torch.float16),
            "hk": _f16(torch.stack(hk)), "confidences": torch.tensor(d.confidences, dtype=torch.float32),
            "declined": None if d.declined_token is None else {
                "token": int(d.declined_token), "conf": float(d.declined_conf), "hk": _f16(d.declined_hk)},
            "context": None if c is None else {"h": _f16(c.h), "first_pos": int(c.first_pos), "window": int(c.window)}}


def block_of(rec: dict, vocab_size: int) -> Block:
    """A ``Block`` whose verifier logits are the record's top-K (the rest -inf) and whose features are its hk."""
    inputs, hk = rec["inputs"].tolist(), rec["hk"]
    m, src = len(inputs) - 1, rec["source"]
    logits = torch.full((m + 1, vocab_size), float("-inf"))
    logits.scatter_(1, rec["top_idx"].long(), rec["top_val"].float())
    dec = rec["declined"] or {}
    draft = Draft(inputs[1:], None, hk[:m] if src == "self" else None, rec["confidences"].tolist(), source=src,
                  last_token=inputs[0], declined_token=dec.get("token"), declined_conf=dec.get("conf"),
                  declined_hk=dec.get("hk"))
    ver = Verification(logits, rec["verified"].tolist(), shallow=ShallowOut(None, hk[None]), hk_from=0)
    c = rec["context"]
    ctx = None if c is None else HiddenContext(c["h"], c["first_pos"], c["window"])
    return Block(draft, ver, rec["accepted"], rec["committed"].tolist(), context=ctx)


class TraceWriter:
    """The decode side: ``on_block`` (a ``kangaroo_generate`` hook) records each block; every ``per_shard`` blocks,
    and at ``flush``, a shard is written atomically into ``folder``."""

    def __init__(self, folder, topk: int = 1024, per_shard: int = 64):
        self.folder, self.topk, self.per_shard = Path(folder), topk, per_shard
        self.folder.mkdir(parents=True, exist_ok=True)
        done = shard_numbers(self.folder)
        self.next = (max(done) + 1) if done else 1
        self.pending: list[dict] = []

    def on_block(self, blk: Block) -> None:
        self.pending.append(record_of(blk, self.topk))
        if len(self.pending) >= self.per_shard:
            self.flush()

    def flush(self) -> Path | None:
        if not self.pending:
            return None
        path = self.folder / SHARD.format(self.next)
        with atomic_write(path, "wb") as f:
            torch.save(self.pending, f)
        self.next, self.pending = self.next + 1, []
        return path


def shard_numbers(folder) -> list[int]:
    """The shard numbers present in ``folder``, ascending."""
    names = (p.name for p in Path(folder).glob("trace_*.pt"))
    return sorted(int(n[6:-3]) for n in names if n[6:-3].isdigit())


def read_shard(folder, n: int) -> list[dict]:
    return torch.load(Path(folder) / SHARD.format(n), map_location="cpu", weights_only=True)
