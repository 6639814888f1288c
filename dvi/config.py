"""DVIConfig: every DVI setting of a run, typed and frozen, built once from the flags (``evaluation/cli.py``).

    DVIConfig
      online     train while decoding (False: deploy, or collect tuples only)
      buffer     BufferConfig    ring-buffer capacity, what it stores of the verifier's logits, sampling seed
      trainer    TrainerConfig   optimizer, loss preset, batch and cadence, where it runs, its time budget
      schedule   ScheduleConfig  the loss-weight schedule (``dvi/schedule.py``)
      lora       LoRAConfig      rank and scale of the drafter head's LoRA
      dense      DenseConfig     dense supervision: KD-only tuples from committed and prompt positions
      io         IOConfig        resume/deploy checkpoint, checkpoint cadence and folder, metrics

The library (buffer, trainer, learner) takes these objects; nothing under ``dvi/`` reads command-line flags.
Defaults equal the flags' defaults: the training values are the ``tuned`` named settings (``dvi/settings.py``, which
reads them from here), measured on the bundled SmolLM2-135M; ``--dvi-settings workplan`` holds the work plan's.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

LOGITS_DTYPES = {"float16": torch.float16, "float32": torch.float32}


@dataclass(frozen=True)
class BufferConfig:
    capacity: int = 2048
    store: str = "topk"              # "full": all V logits per slot; "topk": the top-K (indices, values)
    topk: int = 1024
    logits_dtype: str = "float16"    # a key of LOGITS_DTYPES
    seed: int = 0

    @property
    def torch_logits_dtype(self) -> torch.dtype:
        return LOGITS_DTYPES[self.logits_dtype]


@dataclass(frozen=True)
class TrainerConfig:
    lr: float = 3e-3
    tau: float = 1.0                 # KD temperature
    ablation: str = "full"           # a key of dvi.presets.PRESETS
    entropy_weight: float = 0.0
    kd_top1: float = 1.0             # weight of top-1 distillation (CE on the verifier's token) inside the KD term
    pg_form: str = "expected"        # "expected" (losses.expected_acceptance) or "reinforce" (the work plan's)
    batch_size: int = 64
    update_every: int = 8            # one step every N blocks
    kind: str = "thread"             # "thread": own thread on a shadow copy; "inline": inside the decode loop
    idle_steps: bool = True          # thread: step whenever the thread is idle and a new block came, not every
                                     # update_every blocks (a free second core trains more often)
    max_ms: float | None = 5         # inline: trainer time per block (token bucket); None: no cap


@dataclass(frozen=True)
class ScheduleConfig:
    warmup: int = 500
    kl0: float = 1.0
    klmin: float = 1.0
    pgmax: float = 0.2


@dataclass(frozen=True)
class LoRAConfig:
    r: int = 64
    alpha: float = 64.0


@dataclass(frozen=True)
class DenseConfig:
    enabled: bool = True             # KD-only tuples from every committed position of a verify pass
    prefill_positions: int = 32      # with enabled: prompt positions scored by the verifier head (0: none)


@dataclass(frozen=True)
class IOConfig:
    load: str = ""                   # checkpoint to resume (online) or deploy
    save_every: int = 0              # blocks; 0: only DIR/final.pt at the end
    save_dir: str = "runs/checkpoints"
    metrics_out: str | None = None   # folder (a .csv path names its folder); None: runs/metrics
    metrics_every: int = 50          # print a summary line every N blocks
    max_k: int = 6                   # acc@1..acc@K columns (the drafter's steps)
    debug_hk: bool = False


@dataclass(frozen=True)
class DVIConfig:
    online: bool = False
    buffer: BufferConfig = field(default_factory=BufferConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    dense: DenseConfig = field(default_factory=DenseConfig)
    io: IOConfig = field(default_factory=IOConfig)

    @property
    def threaded(self) -> bool:
        return self.online and self.trainer.kind == "thread"
