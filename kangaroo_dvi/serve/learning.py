"""What the server learns and keeps in its state folder: one ``DVILearner`` that every request's blocks feed (one
buffer, one trainer), its checkpoints, and the run record.

    STATE/checkpoints/step_*.pt   every --save-lora-every blocks (the newest KEEP_STEPS kept), written atomically
    STATE/checkpoints/final.pt    at shutdown, after the requests in flight finished
    STATE/metrics/                the learner's CSVs (acceptance.csv with top1_agree, speed.csv, trainer.csv,
                                  heldout.csv)
    STATE/run.json                one entry per server start: command, start/stop time, resumed checkpoint, blocks

A checkpoint holds the LoRA head (and a trained adapter), the optimizer, the schedule, the reward baseline and the
block count (``dvi/checkpoint.py``), and in ``extra`` the goodput policy's calibration and the trainer steps so far;
a restart with the same state folder resumes all of them (``config.parse_serve_args`` picks the newest checkpoint,
``kangaroo_dvi.session.build_session`` loads it).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from common.atomic import atomic_write_text
from dvi.deploy import DeploymentMeta
from dvi.online_loop import DVILearner

KEEP_STEPS = 3


class ServeLearner:
    """``on_block``/``on_prefill`` from the decode thread, in each request's block order; ``status`` from any.
    ``dvi``: the session's learner; ``loaded``: the checkpoint the session deployed or resumed (None: none)."""

    def __init__(self, dvi: DVILearner, loaded: DeploymentMeta | None = None):
        self.dvi, self.cfg, self.online = dvi, dvi.cfg, dvi.online
        self.resumed_from = None if loaded is None else loaded.path
        self.loaded_extra = {} if loaded is None else loaded.extra
        extra = self.loaded_extra
        self.steps_before = int(extra.get("trainer_steps_total", extra.get("train_steps", 0))) if self.online else 0
        self.calibration_restored = False

    def bind(self, factory) -> None:
        """Share the drafter factory's calibration: restored from the loaded checkpoint, saved in every new one."""
        self.calibration_restored = factory.load_state_dict(self.loaded_extra)
        self.dvi.extra_state = lambda: {**factory.state_dict(), "trainer_steps_total": self.trainer_steps}

    @property
    def prefill_positions(self) -> int:
        return self.dvi.prefill_positions

    def on_prefill(self, targets) -> None:
        self.dvi.on_prefill(targets)

    def on_block(self, blk) -> None:
        self.dvi.on_block(blk)
        if self.dvi.books.save_due(self.dvi.global_step):
            prune_steps(self.cfg.io.save_dir, KEEP_STEPS)

    def prefilling(self, n: int) -> None:
        """``n`` prompts are on the prefill thread now: the trainer thread, bounded by a share, yields to them."""
        share = self.dvi.training.share
        if share is not None:
            share.prefilling(n)

    @property
    def trainer_steps(self) -> int:
        return self.steps_before + self.dvi.train_steps

    @property
    def lora_version(self) -> int:
        """The weights drafting uses: versions adopted from the trainer thread (inline: trainer steps), this run."""
        v = self.dvi.training.version
        return self.dvi.train_steps if v is None else int(v)

    @property
    def trainer_share(self) -> float:
        """The trainer thread's time over wall time while blocks were decoded, this run (NaN: no share bound)."""
        share = self.dvi.training.share
        return share.used_share() if share is not None else float("nan")

    @property
    def owed_steps(self) -> int:
        """Trainer steps due but deferred by the share (taken on idle time or at shutdown)."""
        return self.dvi.bg.owed() if self.dvi.bg is not None else 0

    def heldout(self) -> dict[str, dict]:
        """Each trainable drafter's newest held-out evaluation (``dvi/heldout_eval.py``; {} without one)."""
        return self.dvi.heldout.latest() if self.dvi.heldout is not None else {}

    def status(self) -> dict:
        return {"online": self.online, "global_step": self.dvi.global_step, "trainer_steps": self.trainer_steps,
                "lora_version": self.lora_version, "resumed_from": self.resumed_from,
                "calibration_restored": self.calibration_restored,
                "trainer_share": None if self.dvi.training.share is None else round(self.trainer_share, 4),
                "owed_steps": self.owed_steps, "heldout": self.heldout()}

    def finish(self) -> dict:
        """Stop the trainer, save STATE/checkpoints/final.pt (online, after any block) and close the metrics."""
        return self.dvi.finish(True)


def prune_steps(folder, keep: int) -> None:
    """Delete all but the newest ``keep`` step_*.pt in ``folder`` (final.pt and other files are never touched)."""
    steps = sorted(p for p in Path(folder).glob("step_*.pt") if p.stem[5:].isdigit())
    for p in steps[:-keep]:
        p.unlink(missing_ok=True)


class RunRecord:
    """STATE/run.json: a list of server starts, rewritten atomically at start and at stop."""

    def __init__(self, path, argv: list[str], resumed_from: str | None):
        self.path = Path(path)
        self.runs = self._read()
        self.entry = {"started": _now(), "pid": os.getpid(), "argv": list(argv), "resumed_from": resumed_from,
                      "stopped": None}
        self.runs.append(self.entry)
        self._write()

    def _read(self) -> list:
        if not self.path.is_file():
            return []
        try:
            runs = json.loads(self.path.read_text(encoding="utf-8"))["runs"]
            return runs if isinstance(runs, list) else []
        except (ValueError, KeyError, TypeError):
            print(f"[serve] {self.path} is not a run record (damaged?): starting a new one", file=sys.stderr)
            return []

    def stop(self, **facts) -> None:
        self.entry.update(stopped=_now(), **facts)
        self._write()

    def _write(self) -> None:
        atomic_write_text(self.path, json.dumps({"runs": self.runs}, indent=1))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
