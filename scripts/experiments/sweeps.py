"""The sweep experiments: one online DVI run per value of one driver flag, on identical data, then one report.

    python -m scripts.experiments seeds      --out runs/exp_seeds      [--values 1,2,3]        (--seed)
    python -m scripts.experiments exit_layer --out runs/exp_exit_layer [--values 1,2,4]        (--exitlayer)
    python -m scripts.experiments steps      --out runs/exp_steps      [--values 2,4,6]        (--steps)
    python -m scripts.experiments schedule   --out runs/exp_schedule   [--values full,kd_only,kd+ce] (--dvi-ablation)

Common flags: --model-id (smollm2-135m), --prompts-jsonl (assets/sharegpt.jsonl), --max-prompts, --max-new-tokens,
--num-threads, --window, --overwrite, --report-only; every other flag goes to the driver
(``evaluation.inference_kangaroo``) of every run, except the swept flag and those the runner sets.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dvi.presets import PRESETS
from evaluation.cli import OneLineParser, fail
from scripts.experiments.cli import add_common_args, check_common, names_list
from scripts.experiments.prompt_stream import run_stream
from scripts.experiments.report_files import ENTRY, command_line
from scripts.experiments.runner import LAYOUT_FLAGS, Variant
from scripts.experiments.sweep_report import PNG, build_sweep_report, summary_line


@dataclass(frozen=True)
class Sweep:
    name: str                              # the experiment's name on the command line
    flag: str                              # the driver flag it varies
    values: tuple[str, ...]                # default values
    prefix: str                            # run folder = prefix + value
    title: str
    choices: tuple[str, ...] | None = None  # allowed values; None: integers >= minimum
    minimum: int = 1
    spread: bool = False                   # report the mean and spread over the runs (seeds)

    def check(self, text: str) -> list[str]:
        """The --values list: each in ``choices``, or an integer >= ``minimum``."""
        values = names_list(text, "--values", self.choices)
        if self.choices is None:
            bad = [v for v in values if not (v.lstrip("-").isdigit() and int(v) >= self.minimum)]
            if bad:
                fail(f"--values {bad[0]}: {self.flag} takes integers >= {self.minimum}")
        return values

    def variants(self, values: list[str]) -> list[Variant]:
        return [Variant(self.prefix + v, ("--dvi-online", "true", self.flag, v)) for v in values]


SWEEPS = {s.name: s for s in (
    Sweep("seeds", "--seed", ("1", "2", "3"), "seed", "DVI online learning over seeds (mean and min-max band)",
          minimum=0, spread=True),
    Sweep("exit_layer", "--exitlayer", ("1", "2", "4"), "exitlayer", "DVI online learning by exit layer k"),
    Sweep("steps", "--steps", ("2", "4", "6"), "steps", "DVI online learning by draft steps per block"),
    Sweep("schedule", "--dvi-ablation", ("full", "kd_only", "kd+ce"), "",
          "DVI online learning: full schedule vs KD-only (and KD+CE)", choices=tuple(PRESETS)),
)}


def parse_args(sweep: Sweep, argv: list[str]):
    p = OneLineParser(prog=f"{ENTRY} {sweep.name}", description=sweep.title)
    p.add_argument("--model-id", default="smollm2-135m", help="as for evaluation.inference_kangaroo")
    p.add_argument("--prompts-jsonl", default="assets/sharegpt.jsonl", help="ShareGPT jsonl (the online stream)")
    p.add_argument("--values", default=",".join(sweep.values), help=f"comma-separated values of {sweep.flag}")
    add_common_args(p, out=f"runs/exp_{sweep.name}", max_prompts=150)
    args, extra = p.parse_known_args(argv)
    args.values = sweep.check(args.values)
    check_common(args, extra, (sweep.flag, *LAYOUT_FLAGS), f"the {sweep.name} experiment",
                 needs=("model_id", "prompts_jsonl"))
    args.extra = extra
    return args


def main(name: str, argv: list[str]) -> int:
    sweep = SWEEPS[name]
    args = parse_args(sweep, argv)
    out, variants = Path(args.out), sweep.variants(args.values)
    meta = run_stream(args, command_line(name, argv), name, variants,
                      {"experiment": name, "out": str(out), "window": args.window, "swept": sweep.flag,
                       "values": ",".join(args.values)})
    summaries = build_sweep_report(out, sweep.title, sweep.flag, {v.name: v.flags[-1] for v in variants},
                                   args.window, meta, sweep.spread)
    print("\n".join(f"[{name}] {summary_line(run, s)}" for run, s in summaries.items()))
    print(f"[{name}] {out / 'table.md'}, {out / PNG}")
    return 0
