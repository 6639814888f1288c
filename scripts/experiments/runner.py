"""Named variants -> one run of the online DVI driver each, in-process, on identical data; resumable.

Every variant of an experiment runs ``evaluation.inference_kangaroo.main`` with the same data flags and the same
extra flags; only its own flags and its output paths differ: OUT/NAME/{metrics/, checkpoints/final.pt (online runs),
answers.jsonl, done.json}. The driver command is

    data flags + variant flags + layout flags + --overwrite --no-progress [--num-threads N] + extra flags
    + variant overrides (flags that must win over the extra ones, e.g. the drafter of an evaluation cell)

Resume: a variant is skipped when its done.json (written only after the driver returned normally), its metrics
(and, online, checkpoints/final.pt) exist and done.json records the same driver command and the same digests of
the variant's input files (e.g. the checkpoint an evaluation cell deploys); a finished variant with other settings
is refused (pass --overwrite or another --out). An interrupted variant restarts from scratch (the driver saves
final.pt even when interrupted, so final.pt alone does not mean finished).
"""
from __future__ import annotations

import hashlib
import json
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from common.atomic import atomic_write_text
from evaluation.cli import fail

# flags the runner sets for every variant: passing them as extra flags would break the layout or the comparison
LAYOUT_FLAGS = ("--dvi-online", "--metrics-out", "--save-lora-path", "--answer-file", "--overwrite", "--load-lora",
                "--question-file", "--model-path")


@dataclass(frozen=True)
class Variant:
    name: str                             # its folder under OUT
    flags: tuple[str, ...]                # driver flags that make it (before the layout and extra flags)
    online: bool = True                   # trains (expects checkpoints/final.pt) or only decodes
    inputs: tuple[str, ...] = ()          # files whose content is part of its identity (done.json keeps digests)
    overrides: tuple[str, ...] = ()       # driver flags after the extra flags (they win)


@dataclass(frozen=True)
class RunPlan:
    """What every variant of one experiment shares."""
    out: Path
    data_flags: tuple[str, ...]           # model, data and lengths
    extra: tuple[str, ...] = ()           # the user's extra driver flags
    num_threads: int | None = None
    overwrite: bool = False
    tag: str = "experiments"              # log prefix


def folder(plan: RunPlan, v: Variant) -> Path:
    return Path(plan.out) / v.name


def driver_argv(plan: RunPlan, v: Variant) -> list[str]:
    d = folder(plan, v)
    layout = ["--metrics-out", str(d / "metrics")]
    if v.online:
        layout += ["--save-lora-path", str(d / "checkpoints")]
    argv = [*plan.data_flags, *v.flags, *layout, "--answer-file", str(d / "answers.jsonl"), "--overwrite",
            "--no-progress"]
    if plan.num_threads is not None:
        argv += ["--num-threads", str(plan.num_threads)]
    return argv + list(plan.extra) + list(v.overrides)


def digest(path) -> str | None:
    """sha256 of a file (None if it does not exist)."""
    p = Path(path)
    if not p.is_file():
        return None
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def identity(plan: RunPlan, v: Variant) -> dict:
    """What done.json must record for the variant to count as already run: its command and its inputs' digests."""
    return {"argv": driver_argv(plan, v), "inputs": {p: digest(p) for p in v.inputs}}


def finished(d: Path, online: bool = True) -> dict | None:
    """done.json of a variant that ran to the end (None otherwise)."""
    need = [d / "done.json", d / "metrics" / "acceptance.csv"] + ([d / "checkpoints" / "final.pt"] if online else [])
    return json.loads(need[0].read_text()) if all(p.exists() for p in need) else None


def run_variant(plan: RunPlan, v: Variant) -> None:
    from evaluation import inference_kangaroo

    d, want = folder(plan, v), identity(plan, v)
    missing = [p for p, h in want["inputs"].items() if h is None]
    if missing:
        fail(f"{v.name} needs {missing[0]}, which does not exist: run what makes it first")
    done = finished(d, v.online)
    if done and not plan.overwrite:
        if done.get("argv") == want["argv"] and done.get("inputs", {}) == want["inputs"]:
            print(f"[{plan.tag}] {v.name}: finished earlier, skipped")
            return
        what = ("other inputs (" + ", ".join(want["inputs"]) + " changed)" if done.get("argv") == want["argv"]
                else f"other settings (driver command {shlex.join(done.get('argv', []))})")
        fail(f"{d} finished with {what}: pass --overwrite or another --out")
    (d / "done.json").unlink(missing_ok=True)
    print(f"[{plan.tag}] {v.name}: python -m evaluation.inference_kangaroo {shlex.join(want['argv'])}", flush=True)
    t0 = time.time()
    rc = inference_kangaroo.main(list(want["argv"]))
    if rc:
        fail(f"{v.name} ended with exit code {rc}: see the messages above")
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_text(d / "done.json", json.dumps({**want, "seconds": time.time() - t0}, indent=2))


def run_variants(plan: RunPlan, variants: list[Variant]) -> None:
    """Run (or skip, if finished with the same settings) every variant in order."""
    if plan.num_threads is not None:
        import torch

        torch.set_num_threads(plan.num_threads)
    for i, v in enumerate(variants, 1):
        print(f"[{plan.tag}] run {i}/{len(variants)}: {v.name}", flush=True)
        run_variant(plan, v)


def owned_flag(extra: list[str], owned) -> str | None:
    """The first extra flag (``--flag`` or ``--flag=value``) that the experiment sets itself."""
    return next((a.split("=")[0] for a in extra if a.split("=")[0] in owned), None)
