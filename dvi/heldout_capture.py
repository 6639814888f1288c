"""The fixed held-out set: prompts no run trains on, the frozen verifier's greedy answers to them, and the hidden
states a drafter reads there, captured once and kept in a file that every later run reads.

    HeldoutCapture          what was captured (below); ``n`` positions, flat, sequence by sequence
    capture(model, ...)     greedy decoding of each prompt by the verifier, recording every answer position
    load_or_capture(...)    the file of this model, exit layer, weights and source (``HeldoutConfig.cache``), or a
                            new capture written there; a damaged or mismatched file is rebuilt, with one line

A position is an input the self-drafter drafts from when decoding that prompt: the last prompt token and every
answer token but the last. Its target is the verifier's greedy token after it (the next answer token), so a drafter
that agrees there would have its draft accepted. The capture decodes as ``kangaroo_generate`` does (the prompt but
its last token in one pass, then one token per pass, which on the CPU engine equals any verify pass bit for bit),
so the hidden states are those a drafter reads when it decodes these prompts. The verifier is frozen: the capture
of a model never changes, which is why it is cached.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from common.atomic import atomic_write
from common.errors import UserError
from dvi.config import HELDOUT_SKIP, HeldoutConfig
from dvi.heldout_prompts import heldout_prompts, source_path
from kangaroo import cpu_engine
from kangaroo.llama_forward import final_norm

FORMAT = 1


@dataclass
class HeldoutCapture:
    """Tensors on the CPU, in the model's dtype. Per sequence s (a prompt and the verifier's answer, ``ids[s]`` of
    length L): ``h[s]`` [L - 1, d], the layer-k residual of every input position (the shallow layers' output,
    pre-norm: what a windowed adapter reads), and ``h_last[s]`` [L - 1, d], the verifier's last-layer hidden state
    there (after the final norm: the verifier head's input, whose argmax is the next token). Per position i (``n``
    of them, flat): ``seq[i]``, ``pos[i]`` (the input's index in its sequence), ``target[i]`` = ``ids[seq][pos + 1]``
    (the verifier's greedy token there) and ``hk[i]`` [d] = final_norm(h) there, the identity drafter's features.
    Positions of one sequence are consecutive and in order, so a drafter's chain is a run of consecutive positions.
    ``key``: what it was captured from (``capture_key``)."""
    key: dict
    ids: list[torch.Tensor]
    prompt_lens: list[int]
    h: list[torch.Tensor]
    h_last: list[torch.Tensor]
    seq: torch.Tensor
    pos: torch.Tensor
    target: torch.Tensor
    hk: torch.Tensor

    @property
    def n(self) -> int:
        return int(self.target.numel())

    def rows(self, per_sequence: list[torch.Tensor], shift: int = 0) -> torch.Tensor:
        """[n, ...]: ``per_sequence[seq][pos + shift]`` at every position (e.g. ``rows(h_last, -1)``: the verifier's
        state one position earlier; ``shift`` must keep every index inside its sequence)."""
        return torch.cat([per_sequence[s][self.pos[self.seq == s] + shift] for s in range(len(per_sequence))])

    def check(self) -> None:
        """Raise ValueError if the parts do not fit together (a damaged or hand-edited file)."""
        n, d = self.n, self.hk.shape[-1]
        if not (self.seq.shape == self.pos.shape == (n,) and self.hk.shape == (n, d)):
            raise ValueError("position arrays of different lengths")
        if not len(self.ids) == len(self.prompt_lens) == len(self.h) == len(self.h_last):
            raise ValueError("per-sequence lists of different lengths")
        for s, ids in enumerate(self.ids):
            if self.h[s].shape != (len(ids) - 1, d) or self.h_last[s].shape != (len(ids) - 1, d):
                raise ValueError(f"sequence {s}: hidden rows do not match its tokens")
        if n and not torch.equal(self.target, torch.stack([self.ids[s][p + 1] for s, p in zip(self.seq, self.pos)])):
            raise ValueError("targets are not the answers' tokens")

    def to_file(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)} | {"format": FORMAT}

    @classmethod
    def from_file(cls, data: dict) -> "HeldoutCapture":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a held-out capture of format {FORMAT}")
        out = cls(**{f.name: data[f.name] for f in fields(cls)})
        out.check()
        return out


# ----------------------------------------------------------------------------------------------- the capture
@torch.no_grad()
def capture(model, prompts, positions: int, tokens: int, eos: set[int], key: dict | None = None) -> HeldoutCapture:
    """Greedy-decode ``prompts`` (an iterable of token-id lists) with ``model``'s verifier, ``tokens`` answer tokens
    each (fewer at an EOS), until ``positions`` positions are recorded. A prompt that does not fit the model's context
    with its answer is skipped. Raises UserError when the prompts run out first."""
    ids, plens, hs, lasts, seq, pos, target, hk = [], [], [], [], [], [], [], []
    room = int(model.config.max_position_embeddings)
    for prompt in prompts:
        if len(target) >= positions:
            break
        if not prompt or len(prompt) + tokens > room:
            continue
        seq_ids, h, last, feats = _decode(model, prompt, min(tokens, positions - len(target)), eos)
        first = len(prompt) - 1
        seq += [len(ids)] * len(feats)
        pos += range(first, first + len(feats))
        target += seq_ids[len(prompt):]
        hk += feats
        ids.append(torch.tensor(seq_ids))
        plens.append(len(prompt))
        hs.append(h)
        lasts.append(last)
    if len(target) < positions:
        raise UserError(f"the held-out prompts gave {len(target)} answer positions, --heldout-positions asks for "
                        f"{positions}: pass a --heldout-file with more prompts, or fewer --heldout-positions")
    return HeldoutCapture(key or {}, ids, plens, hs, lasts, torch.tensor(seq), torch.tensor(pos), torch.tensor(target),
                          torch.stack(hk))


def _decode(model, prompt: list[int], tokens: int, eos: set[int]):
    """The verifier's greedy answer to ``prompt`` as ``kangaroo_generate`` runs it: (prompt + answer ids, h rows,
    last-layer rows, identity features at each answer position)."""
    caches = model.new_caches(len(prompt) + tokens)
    x = torch.tensor([prompt], device=model.device)
    hs, lasts = [], []
    if len(prompt) > 1:
        h = model.forward_shallow(x[:, :-1], caches.shallow).h
        hs.append(h[0])
        lasts.append(model.forward_deep(h, caches.deep)[0])
    out, feats, tok = list(prompt), [], prompt[-1]
    for _ in range(tokens):
        h = model.forward_shallow(torch.tensor([[tok]], device=model.device), caches.shallow).h
        last = model.forward_deep(h, caches.deep)
        hs.append(h[0])
        lasts.append(last[0])
        feats.append(final_norm(model.norm, h)[0, 0])
        tok = int(model.verifier_logits(last)[0, -1].argmax())
        out.append(tok)
        if tok in eos:
            break
    return out, torch.cat(hs).cpu(), torch.cat(lasts).cpu(), [f.cpu() for f in feats]


# ----------------------------------------------------------------------------------------------- the file
def fingerprint(model) -> str:
    """A hash of the verifier's weights (a strided sample of every tensor, with names and shapes): two models with
    the same fingerprint decode alike."""
    h = hashlib.sha256()
    for name, t in model.base_model.state_dict().items():
        flat = t.detach().reshape(-1)
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(flat[::max(1, flat.numel() // 4096)].float().cpu().numpy().tobytes())
    return h.hexdigest()[:24]


def capture_key(model, cfg: HeldoutConfig) -> dict:
    """What a capture depends on: the model's weights, exit layer, weight format, engine and precision, and the
    source (file, slice, positions, tokens per prompt). The prompts' rendered ids are checked on load too."""
    from kangaroo.stored_weights import default_weights

    engine = "lean" if cpu_engine.applies(torch.zeros(1, model.config.hidden_size, device=model.device)) else "plain"
    return {"model": fingerprint(model), "exit_layer": int(model.exit_layer), "weights": default_weights(),
            "engine": engine, "device": model.device.type, "dtype": str(model.dtype),
            "source": str(source_path(cfg).resolve()), "skip": 0 if cfg.file else HELDOUT_SKIP,
            "positions": cfg.positions, "tokens": cfg.tokens}


def cache_path(cfg: HeldoutConfig, key: dict) -> Path | None:
    if not cfg.cache:
        return None
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cfg.cache) / f"heldout_{digest}.pt"


def load_or_capture(model, tokenizer, cfg: HeldoutConfig, eos: set[int], print_fn=print) -> HeldoutCapture:
    """The held-out set of ``model`` under ``cfg``: read from its cache file when that holds this model, exit layer,
    weights and source, and the same prompt ids; else captured (and written there, atomically). A file that cannot
    be read or does not match is captured again, said in one line."""
    import time

    key = capture_key(model, cfg)
    path = cache_path(cfg, key)
    if path is not None and path.is_file():
        cap, why = _read(path, key, heldout_prompts(cfg, tokenizer, model.model_id), model, cfg.tokens)
        if why is None:
            print_fn(f"[heldout] {cap.n} positions of {len(cap.ids)} prompts read from {path}")
            return cap
        print_fn(f"[heldout] {path} {why}: capturing the held-out set again")
    t0 = time.perf_counter()
    cap = capture(model, heldout_prompts(cfg, tokenizer, model.model_id), cfg.positions, cfg.tokens, eos, key)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "wb") as f:
            torch.save(cap.to_file(), f)
    print_fn(f"[heldout] captured {cap.n} positions of {len(cap.ids)} prompts with the verifier in "
             f"{time.perf_counter() - t0:.1f} s" + (f", kept in {path}" if path is not None else ""))
    return cap


def _read(path: Path, key: dict, prompts, model, tokens: int) -> tuple[HeldoutCapture | None, str | None]:
    """The capture in ``path`` and None, or None and why it is not this run's held-out set."""
    try:
        cap = HeldoutCapture.from_file(torch.load(path, weights_only=True))
    except Exception as e:  # a cut, damaged or foreign file: whatever torch.load or the checks raise
        return None, f"is damaged or not a held-out capture ({type(e).__name__}: {str(e)[:80]})"
    if cap.key != key:
        return None, "was captured from another model, exit layer, weights or source"
    room, used = int(model.config.max_position_embeddings), []
    for p in prompts:
        if len(used) == len(cap.ids):
            break
        if p and len(p) + tokens <= room:
            used.append(p)
    if used != [ids[:n].tolist() for ids, n in zip(cap.ids, cap.prompt_lens)]:
        return None, "holds other prompt ids (another tokenizer, chat template or file)"
    return cap, None
