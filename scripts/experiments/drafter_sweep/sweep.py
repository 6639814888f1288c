"""The drafter's settings chosen by measured tokens/s, not by agreement alone: one command, two phases.

    python -m scripts.experiments drafter_sweep --out runs/sweep_drafter --num-threads 1 \\
        --train-prompts 100 --train-tokens 64 --per-category 5 --max-new-tokens 64

Variants: a coordinate sweep around --base (exit layer, trained adapter, drafter vocabulary, draft steps; default
2,on,8192,6): each value of --exit-layers, --adapters, --vocabs and --steps-list with the other settings at the base
(--grid: every combination). The drafter kind of the deployed phase is --drafters (self: the learned drafter alone;
hybrid: the deployed default, n-gram first).

1. online (OUT/online/NAME): one DVI online run per trained configuration (exit layer, adapter, vocabulary), the
   defaults of ``--dvi-online true`` otherwise, on the same first --train-prompts ShareGPT prompts, each prompt also
   decoded greedily in the same run (``--compare-greedy``): decode tokens/s against greedy, top1_agree over the last
   quarter, outputs equal to greedy. Resumable (``scripts/experiments/runner.py``).
2. deployed (OUT/deployed): every variant deploys its configuration's checkpoint (frozen) on the first
   --per-category Spec-Bench questions of each category, first turn; greedy and every variant decode each question
   in an order rotated per question (one run, so drift hits all alike); tokens/s against greedy, committed tokens
   per pass, outputs checked against greedy; the probe gate's counters (probes declined for free) per variant.

OUT/table.md and OUT/summary.json rank both phases by tokens/s against greedy (the best of each is what the defaults
of ``--dvi-online true`` and of the deployed drafter should be); OUT/deployed/{table.md,summary.json,speedup.png} are
the benchmark's per-category report. Exit code 1 if any output differs from greedy's.
"""
from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path

from common.atomic import atomic_write_text
from common.config_fields import str2bool
from evaluation.cli import OneLineParser, fail, int_list
from scripts.experiments.drafter_sweep.deployed import run_deployed
from scripts.experiments.drafter_sweep.report import write_sweep_report
from scripts.experiments.report_files import ENTRY, command_line
from scripts.experiments.runner import RunPlan, Variant, run_variants


@dataclass(frozen=True)
class Trained:
    """A configuration the online phase trains (one online run, one checkpoint)."""
    exit_layer: int
    adapter: bool
    vocab: int                             # 0: the full vocabulary

    @property
    def name(self) -> str:
        return f"k{self.exit_layer}_{'adapter' if self.adapter else 'lora'}_v{self.vocab or 'full'}"

    def flags(self) -> tuple[str, ...]:
        return ("--dvi-online", "true", "--exitlayer", str(self.exit_layer), "--adapter-mode",
                "train" if self.adapter else "none", "--drafter-vocab", str(self.vocab), "--compare-greedy")


@dataclass(frozen=True)
class Deployed:
    """A deployed variant: a trained configuration, the draft steps and the drafter kind."""
    trained: Trained
    steps: int
    drafter: str

    @property
    def name(self) -> str:
        return f"{self.trained.name}_s{self.steps}_{self.drafter}"


def variants(args) -> tuple[list[Trained], list[Deployed]]:
    """The coordinate sweep around the base (or the full grid), trained configurations first-seen order."""
    k0, a0, v0, s0 = args.base
    axes = {"k": args.exit_layers, "a": args.adapters, "v": args.vocabs, "s": args.steps_list}
    if args.grid:
        points = list(itertools.product(axes["k"], axes["a"], axes["v"], axes["s"]))
    else:
        points = [(k0, a0, v0, s0)] + [(k, a0, v0, s0) for k in axes["k"]] + [(k0, a, v0, s0) for a in axes["a"]] + \
                 [(k0, a0, v, s0) for v in axes["v"]] + [(k0, a0, v0, s) for s in axes["s"]]
    deployed = list(dict.fromkeys(Deployed(Trained(k, a, v), s, d) for k, a, v, s in points for d in args.drafters))
    trained = list(dict.fromkeys(d.trained for d in deployed))
    return trained, deployed


def build_parser() -> OneLineParser:
    p = OneLineParser(prog=f"{ENTRY} drafter_sweep", description=__doc__.splitlines()[0])
    p.add_argument("--model-id", default="smollm2-135m")
    p.add_argument("--out", default="runs/sweep_drafter")
    p.add_argument("--base", default="2,on,8192,6", help="exit layer, adapter on/off, vocabulary (0: full), steps")
    p.add_argument("--exit-layers", default="1,2,4")
    p.add_argument("--adapters", default="on,off")
    p.add_argument("--vocabs", default="4096,8192,16384,0", help="drafter vocabulary sizes (0: full)")
    p.add_argument("--steps-list", default="3,6", help="draft steps of the deployed variants")
    p.add_argument("--drafters", default="self", help="deployed drafter kinds: self, hybrid")
    p.add_argument("--grid", action="store_true", help="every combination instead of the coordinate sweep")
    p.add_argument("--prompts-jsonl", default="assets/sharegpt.jsonl")
    p.add_argument("--train-prompts", type=int, default=100)
    p.add_argument("--train-tokens", type=int, default=64)
    p.add_argument("--question-file", default=None, help="Spec-Bench question jsonl (the drivers' default)")
    p.add_argument("--per-category", type=int, default=5)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--num-threads", type=int, default=1)
    p.add_argument("--phases", default="online,deployed", help="which phases to run (the report reads both)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    return p


def parse_args(argv):
    args, extra = build_parser().parse_known_args(argv)
    args.extra = extra  # more flags for every online run's driver (e.g. --seed)
    base = args.base.split(",")
    if len(base) != 4:
        fail(f"--base {args.base!r}: expected exit layer, adapter on/off, vocabulary, steps (e.g. 2,on,8192,6)")
    try:
        args.base = (int(base[0]), str2bool(base[1]), int(base[2]), int(base[3]))
        args.adapters = [str2bool(a) for a in args.adapters.split(",")]
    except (argparse.ArgumentTypeError, ValueError):
        fail("--base takes integers and on/off (e.g. 2,on,8192,6); --adapters takes on/off")
    args.exit_layers = int_list(args.exit_layers, "--exit-layers", 1)
    args.vocabs = int_list(args.vocabs, "--vocabs", 0)
    args.steps_list = int_list(args.steps_list, "--steps-list", 1)
    args.drafters = [d for d in args.drafters.split(",") if d]
    if not args.drafters or set(args.drafters) - {"self", "hybrid"}:
        fail(f"--drafters {','.join(args.drafters)}: pick from self, hybrid")
    args.phases = set(args.phases.split(","))
    if not args.phases or args.phases - {"online", "deployed"}:
        fail("--phases takes online, deployed or both")
    if min(args.train_prompts, args.train_tokens, args.per_category, args.max_new_tokens, args.num_threads) < 1:
        fail("--train-prompts, --train-tokens, --per-category, --max-new-tokens and --num-threads must be >= 1")
    return args


def run_online(args, trained: list[Trained]) -> None:
    data = ("--model-id", args.model_id, "--prompts-jsonl", args.prompts_jsonl, "--max-prompts",
            str(args.train_prompts), "--max-new-tokens", str(args.train_tokens))
    plan = RunPlan(Path(args.out) / "online", data, tuple(args.extra), args.num_threads, args.overwrite, tag="sweep")
    run_variants(plan, [Variant(t.name, t.flags()) for t in trained])


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    command = command_line("drafter_sweep", argv)
    trained, deployed = variants(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "command.txt", command + "\n")
    if "online" in args.phases:
        run_online(args, trained)
    lossless = True
    if "deployed" in args.phases:
        lossless = run_deployed(args, deployed, command)
    lossless = write_sweep_report(out, trained, deployed, command) and lossless
    return 0 if lossless else 1
