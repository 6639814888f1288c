"""The block cost model and its markdown report, pure (no model, no timing): what a block that drafts m tokens
costs from the measured parts, the committed tokens at which it breaks even with greedy decoding, and the tables.

    block(m)  = (m + 1) shallow + m head + deep(m + 1) [+ train / update_every while learning online]
    speedup   = c * ar / block(m),  so the block breaks even at c = block(m) / ar committed tokens
"""
from __future__ import annotations


def block_ms(costs: dict, m: int, head: str, online: bool = False, update_every: int = 8) -> float:
    """Modelled wall time of one block that drafts ``m`` tokens with ``head`` ('identity' or 'lora')."""
    t = (m + 1) * costs["shallow_ms"] + m * costs[f"head_{head}_ms"] + costs["deep_ms"][m + 1]
    return t + (costs["train_ms"] / update_every if online else 0.0)


def break_even(costs: dict, m: int, head: str, online: bool = False, update_every: int = 8) -> float:
    """Committed tokens per block at which a block of ``m`` drafts matches plain greedy decoding."""
    return block_ms(costs, m, head, online, update_every) / costs["ar_ms"]


def targets_markdown(costs: dict) -> list[str]:
    """The lean-engine targets (issue 9) against these costs."""
    ar, deep, n_max = costs["ar_ms"], costs["deep_ms"], max(costs["deep_ms"])
    rows = [("ar / stream limit", ar / costs["stream_limit_ms"], 1.25), ("deep(2) / ar", deep[2] / ar, 1.10),
            (f"deep({n_max}) / ar", deep[n_max] / ar, 1.30)] if n_max >= 2 else []
    return ["| ratio | measured | target |", "|---|---:|---:|"] + [
        f"| {name} | {v:.2f} | <= {t:.2f} {'(met)' if v <= t else '(missed)'} |" for name, v, t in rows]


def variants_markdown(variants: dict) -> list[str]:
    """One row per engine/thread variant: the costs that decide a block, side by side."""
    names = list(variants)
    n_max = max(variants[names[0]]["deep_ms"])
    lines = ["| variant | ar | shallow | head | " + " | ".join(f"deep({n})" for n in range(1, n_max + 1)) +
             f" | deep(2)/ar | deep({n_max})/ar |", "|---" * (n_max + 6) + "|"]
    for name in names:
        c = variants[name]
        lines.append(f"| {name} | {c['ar_ms']:.1f} | {c['shallow_ms']:.1f} | {c['head_identity_ms']:.1f} | " +
                     " | ".join(f"{c['deep_ms'][n]:.1f}" for n in range(1, n_max + 1)) +
                     f" | {c['deep_ms'][2] / c['ar_ms']:.2f} | {c['deep_ms'][n_max] / c['ar_ms']:.2f} |")
    return lines


def report_markdown(costs: dict, meta: dict, steps: int, update_every: int) -> str:
    lines = ["# Block costs (median ms)", ""] + [f"- {k}: {v}" for k, v in meta.items()] + [""]
    lines += ["| part | ms |", "|---|---:|",
              f"| ar: one plain greedy step (all layers + head, 1 token) | {costs['ar_ms']:.1f} |",
              f"| shallow: first k layers, 1 token | {costs['shallow_ms']:.1f} |",
              f"| drafter head, identity (verifier's head) | {costs['head_identity_ms']:.1f} |",
              f"| drafter head, LoRA (DVI) | {costs['head_lora_ms']:.1f} |"]
    lines += [f"| deep({n}): verify {n} tokens (layers k.. + head) | {ms:.1f} |" for n, ms in costs["deep_ms"].items()]
    lines += [f"| one DVI trainer step | {costs['train_ms']:.1f} |"]
    if "stream_limit_ms" in costs:
        lines += [f"| stream limit: weight bytes per token / one core's stream rate | {costs['stream_limit_ms']:.1f} |",
                  ""] + targets_markdown(costs)
    lines += ["",
              "Break-even committed tokens per block (= block cost / ar; a block commits accepted + 1 tokens, so "
              "it can commit at most m + 1):", "",
              "| drafts m | identity Kangaroo | DVI deployed | DVI learning online |", "|---:|---:|---:|---:|"]
    for m in range(1, steps + 1):
        lines.append(f"| {m} | {break_even(costs, m, 'identity'):.2f} | {break_even(costs, m, 'lora'):.2f} | "
                     f"{break_even(costs, m, 'lora', True, update_every):.2f} |")
    return "\n".join(lines) + "\n"
