"""One run's per-block series (metrics/acceptance.csv and speed.csv), pure: rolling curves and segment stats.

Segment stats over a list of blocks: acc@1 = share of the blocks that drafted whose first draft was accepted (the
acc@1 cell is blank when nothing was drafted); top1_agree = mean over the blocks where it is defined (blank cells
excluded: n-gram blocks, skipped probes); mean accepted = mean committed tokens per block (per verifier pass);
block_acc = mean accepted/drafted; tokens/s = committed tokens / block wall seconds, from speed.csv.
Quarters: the first and last 25% of a run's blocks (at least one block each; they overlap under 8 blocks).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunMetrics:
    acceptance: list[dict]     # acceptance.csv rows (empty cells: None)
    speed: list[dict]          # speed.csv rows, block for block


def load_metrics(run_folder) -> RunMetrics | None:
    """The metrics of OUT/NAME/metrics, or None if the run has no acceptance.csv."""
    from dvi.metrics import read_acceptance_csv

    m = Path(run_folder) / "metrics"
    if not (m / "acceptance.csv").is_file():
        return None
    speed = read_acceptance_csv(m / "speed.csv") if (m / "speed.csv").is_file() else []
    return RunMetrics(read_acceptance_csv(m / "acceptance.csv"), speed)


def mean(xs) -> float | None:
    """Mean of the values that are not None (None if there are none)."""
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def rolling_mean(values: list, window: int) -> list:
    """Trailing mean over the last ``window`` entries, ignoring None (None where the window holds no value)."""
    out, s, n = [], 0.0, 0
    for i, v in enumerate(values):
        if v is not None:
            s, n = s + v, n + 1
        if i >= window and values[i - window] is not None:
            s, n = s - values[i - window], n - 1
        out.append(s / n if n else None)
    return out


def curve(acc_rows: list[dict], key: str, window: int) -> tuple[list, list]:
    """(global steps, rolling mean of column ``key``) of acceptance.csv rows."""
    return [r["step"] for r in acc_rows], rolling_mean([r.get(key) for r in acc_rows], window)


def segment_stats(acc_rows: list[dict], speed_rows: list[dict]) -> dict:
    """acc@1, top1_agree, mean accepted, block_acc and tokens/s over the given blocks."""
    wall_s = sum(r["wall_ms"] for r in speed_rows) / 1000
    return {"blocks": len(acc_rows), "acc@1": mean([r["acc@1"] for r in acc_rows]),
            "top1_agree": mean([r.get("top1_agree") for r in acc_rows]),
            "mean_accepted": mean([r["committed"] for r in acc_rows]),
            "block_acc": mean([r["block_acc"] for r in acc_rows]),
            "tokens_per_s": sum(r["committed"] for r in speed_rows) / wall_s if wall_s > 0 else None}


def quarter_size(n: int) -> int:
    return max(1, n // 4) if n else 0


def quarters(m: RunMetrics) -> dict:
    """Stats of the whole run and of its first and last quarter of blocks."""
    q = quarter_size(len(m.acceptance))
    return {"blocks": len(m.acceptance), "all": segment_stats(m.acceptance, m.speed),
            "first": segment_stats(m.acceptance[:q], m.speed[:q]),
            "last": segment_stats(m.acceptance[-q:] if q else [], m.speed[-q:] if q else [])}
