"""Where speed comes from, pure: records -> per method, per draft source (the drafters of its chain, ``none`` for
plain greedy steps) over all questions -> the table appended to OUT/table.md and ``sources`` in summary.json."""
from __future__ import annotations

from common.cells import fmt
from kangaroo.drafters.counters import merged, source_rows


def sources_summary(records: list[dict], methods: list[str]) -> dict[str, list[dict]]:
    """method -> ``source_rows`` over every turn of ``records`` (methods whose records hold no sources: left out)."""
    out = {}
    for m in methods:
        turns = [s for r in records if m in r["methods"] for s in r["methods"][m].get("sources", []) if s]
        if turns:
            out[m] = source_rows(merged(turns))
    return out


def sources_markdown(by_method: dict[str, list[dict]]) -> str:
    if not by_method:
        return ""
    lines = ["", "## Where speed comes from: draft sources (all questions)", "",
             "Per method, per draft source: the verifier passes over its drafts (blocks; `none`: no drafter kept a "
             "token, a plain greedy step) and their share, committed tokens per pass, accepted / drafted tokens, "
             "how often the drafter was asked (a chain asks its drafters in order until one drafts) and the ms per "
             "ask, the verifier ms per block, and the source's share of the decoding time (its drafting + the "
             "verification of its blocks).", "",
             "| method | source | blocks | share of blocks | tokens per pass | accepted / drafted | asked | "
             "draft ms per ask | verify ms per block | share of time |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for m, rows in by_method.items():
        for r in rows:
            acc = r["accepted"] / r["drafted"] if r["drafted"] else None
            per_ask = r["draft_ms"] / r["calls"] if r["calls"] else None
            per_block = r["verify_ms"] / r["blocks"] if r["blocks"] else None
            share = None if r["block_share"] is None else 100 * r["block_share"]
            time = None if r["time_share"] is None else 100 * r["time_share"]
            lines.append(f"| {m} | {r['source']} | {r['blocks']} | {fmt(share, '.1f')}% | "
                         f"{fmt(r['committed_per_pass'], '.2f')} | {fmt(acc, '.2f')} | {r['calls']} | "
                         f"{fmt(per_ask, '.2f')} | {fmt(per_block, '.1f')} | {fmt(time, '.1f')}% |")
    return "\n".join(lines + [""])
