"""Timing the parts of a block on a ``KangarooModel``: the plain greedy step, the shallow layers, both drafter heads,
the verify pass over n tokens and one DVI trainer step (``block.py`` says what each part is; the limits they are
held against: ``limits.py``), and the timers (warm: the median after a warm-up; cold: each call after an eviction)."""
from __future__ import annotations

import statistics

import torch

from kangaroo.timing import elapsed_ms


def median_ms(fn, repeats: int, device) -> float:
    """Median milliseconds of ``repeats`` calls of ``fn`` after one untimed warm-up call."""
    fn()
    return statistics.median(elapsed_ms(fn, device) for _ in range(repeats))


def cold_median_ms(fn, evict, repeats: int, device) -> float:
    """Median ms of ``fn`` over ``repeats`` calls, each after an untimed ``evict()`` (and one warm-up pair)."""
    evict()
    fn()
    times = []
    for _ in range(repeats):
        evict()
        times.append(elapsed_ms(fn, device))
    return statistics.median(times)


@torch.no_grad()
def context_caches(km, context: int, n_max: int):
    """Caches holding a random ``context``-token prompt, the prompt, ``at_context(fn)`` (a call that leaves the
    caches at that length) and ``ar``: one plain greedy step so wrapped."""
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(3, km.config.vocab_size, (1, context), generator=gen).to(km.device)
    caches = km.new_caches(context + n_max + 2)
    km.forward_deep(km.forward_shallow(prompt, caches.shallow).h, caches.deep)
    L = caches.shallow.length

    def at_context(fn):  # every timed call starts from the same cache length and leaves it there
        def run():
            fn()
            caches.crop(L)
        return run

    one = prompt[:, :1]
    ar = at_context(lambda: km.verifier_logits(km.forward_deep(km.forward_shallow(one, caches.shallow).h,
                                                               caches.deep)).argmax(-1).tolist())
    return caches, prompt, at_context, ar


@torch.no_grad()
def measure(km, args, lora_r: int, lora_alpha: float, train: bool = True) -> dict:
    from dvi.config import ScheduleConfig, TrainerConfig
    from dvi.online_trainer import OnlineTrainer
    from dvi.types import Batch
    from kangaroo.drafter_head import DrafterHead, attach_drafter_head

    cfg, dev, n_max = km.config, km.device, args.steps + 1
    gen = torch.Generator().manual_seed(0)
    caches, prompt, at_context, ar = context_caches(km, args.context, n_max)
    L = caches.shallow.length
    one = prompt[:, :1]
    shallow = at_context(lambda: km.forward_shallow(one, caches.shallow))
    hk = km.forward_shallow(one, caches.shallow).hk[:, -1]
    caches.crop(L)
    lora_head = DrafterHead.from_verifier_head(km.head_model, r=lora_r, alpha=lora_alpha)
    torch.nn.init.normal_(lora_head.proj.B, std=1e-3)  # a trained head has B != 0: time that path
    h_n = km.forward_shallow(prompt[:, :n_max], caches.shallow).h
    caches.crop(L)
    costs = {
        "ar_ms": median_ms(ar, args.repeats, dev),
        "shallow_ms": median_ms(shallow, args.repeats, dev),
        "head_identity_ms": median_ms(lambda: km.drafter_logits_from_hk(hk).softmax(-1).max(-1), args.repeats, dev),
        "head_lora_ms": median_ms(lambda: lora_head(hk).softmax(-1).max(-1), args.repeats, dev),
        "deep_ms": {n: median_ms(at_context(lambda n=n: km.verifier_logits(km.forward_deep(h_n[:, :n], caches.deep))
                                            .argmax(-1).tolist()), args.repeats, dev) for n in range(1, n_max + 1)},
    }
    if not train:
        return costs
    # one trainer step on a synthetic batch of the real shapes, past the warm-up (every term computed)
    attach_drafter_head(km, r=lora_r, alpha=lora_alpha).load_state_dict(lora_head.state_dict())
    b, k = args.dvi_batch_size, min(args.dvi_topk, cfg.vocab_size)
    batch = Batch(hk=torch.randn(b, cfg.hidden_size, generator=gen).to(dev, torch.float16),
                  token=torch.randint(0, cfg.vocab_size, (b,), generator=gen).to(dev),
                  reward=(torch.rand(b, generator=gen) < 0.3).float().to(dev),
                  pos=torch.randint(1, args.steps + 1, (b,), generator=gen).to(dev),
                  is_first_reject=(torch.rand(b, generator=gen) < 0.5).to(dev),
                  z_idx=torch.stack([torch.randperm(cfg.vocab_size, generator=gen)[:k] for _ in range(b)]).to(dev),
                  z_val=torch.randn(b, k, generator=gen).to(dev, torch.float16))
    trainer = OnlineTrainer(km, TrainerConfig(lr=1e-4, tau=1.0, max_ms=None), ScheduleConfig(0, 1.0, 1.0, 0.2),
                            cfg.vocab_size)
    costs["train_ms"] = median_ms(lambda: trainer.step(batch, 10 ** 6), max(3, args.repeats // 3), dev)
    km.drafter_head = None  # measured: back to the identity drafter
    return costs
