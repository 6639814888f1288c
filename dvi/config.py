"""DVIConfig: every DVI setting of a run, typed, frozen and checked once, each field carrying its flag.

    DVIConfig
      online     train while decoding (False: deploy, or collect tuples only)
      buffer     BufferConfig    ring-buffer capacity, what it stores of the verifier's logits, sampling seed
      trainer    TrainerConfig   optimizer, loss preset, batch and cadence, where it runs, its time budget
      schedule   ScheduleConfig  the loss-weight schedule (``dvi/schedule.py``)
      lora       LoRAConfig      rank and scale of the drafter head's LoRA
      dense      DenseConfig     dense supervision: KD-only tuples from committed and prompt positions
      io         IOConfig        resume/deploy checkpoint, checkpoint cadence and folder, metrics
      heldout    HeldoutConfig   the fixed held-out set every trainable drafter is evaluated on (``dvi/heldout.py``)

Each config checks itself in ``__post_init__`` (``common/config_fields.py``): a bad value raises ``ConfigError``
naming its flag, whether it came from the command line (the ``--dvi-*`` flags are generated from these fields) or
from Python; cross-field checks live in the config that owns both fields (batch <= buffer: ``DVIConfig``), checks
against the model (top-K <= vocabulary) in ``check_model``. The library (buffer, trainer, learner) takes these
objects; nothing under ``dvi/`` reads command-line flags. Defaults equal the flags' defaults: the ``named`` training
values are the ``tuned`` named settings (``dvi/settings.py`` reads them from here), measured on the bundled
SmolLM2-135M; ``--dvi-settings workplan`` holds the work plan's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from common.config_fields import Rule, above, at_least, check_fields, setting
from common.errors import ConfigError
from dvi.presets import PRESETS

LOGITS_DTYPES = {"float16": torch.float16, "float32": torch.float32}
PG_FORMS = ("reinforce", "expected")
WEIGHT = "a loss weight; 0 turns the term off"


@dataclass(frozen=True)
class BufferConfig:
    capacity: int = setting(2048, flag="--dvi-buffer-size", rule=at_least(1), help="ring-buffer capacity in samples")
    store: str = setting("topk", flag="--dvi-store", choices=("full", "topk"),
                         help="full: all V verifier logits per slot; topk: the top-K (indices, values)")
    topk: int = setting(1024, flag="--dvi-topk", rule=at_least(1), help="K of --dvi-store topk")
    logits_dtype: str = setting("float16", flag="--dvi-logits-dtype", choices=tuple(LOGITS_DTYPES))
    seed: int = setting(0, source="seed")

    def __post_init__(self):
        check_fields(self)

    @property
    def torch_logits_dtype(self) -> torch.dtype:
        return LOGITS_DTYPES[self.logits_dtype]

    def check_vocab(self, vocab_size: int) -> None:
        if self.store == "topk" and self.topk > vocab_size:
            raise ConfigError(f"--dvi-topk {self.topk} is larger than the vocabulary ({vocab_size}): "
                              "lower it or use --dvi-store full")


SHARE = Rule("is not a share of wall time: pass a number in (0, 1] (1: no bound)", lambda x: 0 < x <= 1)


@dataclass(frozen=True)
class TrainerConfig:
    lr: float = setting(3e-3, flag="--dvi-lr", named=True, rule=above(0, "the AdamW learning rate"),
                        help="AdamW learning rate of the LoRA tensors")
    tau: float = setting(1.0, flag="--dvi-tau", named=True, rule=above(0), help="KD temperature")
    ablation: str = setting("full", flag="--dvi-ablation", named=True, choices=tuple(PRESETS),
                            help="loss preset (work plan step 11; dvi/presets.py)")
    entropy_weight: float = setting(0.0, flag="--dvi-entropy-weight", rule=at_least(0, WEIGHT))
    kd_top1: float = setting(1.0, flag="--dvi-kd-top1", named=True, rule=at_least(0, WEIGHT),
                             help="weight of top-1 distillation (CE on the verifier's token at every row) in the KD "
                                  "term")
    pg_form: str = setting("expected", flag="--dvi-pg-form", named=True, choices=PG_FORMS,
                           help="policy gradient: reinforce (the work plan's, on the drafted token) or expected (the "
                                "exact gradient of the acceptance probability, with the verifier's token)")
    feature_lr: float | None = setting(3e-4, flag="--dvi-feature-lr", type=float, nullable=True,
                                       rule=above(0, "the AdamW learning rate"),
                                       help="AdamW learning rate of the feature drafter (its layer, fc and LoRA head: "
                                            "a fresh layer wants less than --dvi-lr's LoRA delta; measured offline, "
                                            "runs/exp_feature_drafter; a run from --dvi-warm-start takes "
                                            "--dvi-feature-lr-warm instead); None (Python only): --dvi-lr")
    feature_lr_warm: float = setting(1e-4, flag="--dvi-feature-lr-warm", rule=above(0, "the AdamW learning rate"),
                                     help="the feature drafter's learning rate in a run that started from "
                                          "--dvi-warm-start (now, or the run it resumes): a trained layer keeps "
                                          "improving online at 1e-4 and drifts down at 3e-4 (runs/exp_warm_start)")
    feature_bf16: bool = setting(True, flag="--dvi-feature-bf16",
                                 help="the feature drafter's trainer step in bfloat16 autocast where the hardware has "
                                      "it (a CPU with AVX-512 BF16 or AMX, a CUDA GPU): ~1.8x the float32 step, the "
                                      "same held-out skill offline (runs/exp_feature_drafter); false: float32")
    batch_size: int = setting(64, flag="--dvi-batch-size", rule=at_least(1))
    update_every: int = setting(8, flag="--dvi-update-every", named=True, rule=at_least(1),
                                help="one trainer step every N blocks (a thread trainer too busy to take one when it "
                                     "falls due takes it when it is next free, at most 16 owed)")
    kind: str = setting("thread", flag="--dvi-trainer", choices=("thread", "inline"),
                        help="thread: the trainer runs on its own thread on a copy of the LoRA tensors and publishes "
                             "them at block boundaries (decoding never waits); inline: steps inside the decode loop")
    idle_steps: bool = setting(False, flag="--dvi-trainer-idle",
                               help="thread trainer: step whenever the trainer thread is idle and a new block came (3x "
                                    "the steps; measured: top1_agree within noise, decode slower on a busy machine: "
                                    "runs/drafthead); false: one step every --dvi-update-every blocks")
    share: float = setting(1.0, flag="--dvi-trainer-share", rule=SHARE,
                           help="thread trainer: at most this share of one core's wall time while blocks are being "
                                "decoded (a token bucket; a step due past it waits, and is taken on idle time or at "
                                "the end: dvi/trainer_share.py); 1: no bound (the server's default is lower)")
    max_ms: float | None = setting(5, flag="--max-online-train-ms", type=int, nullable=True, rule=at_least(0),
                                   help="trainer time the decode loop may spend per block (inline trainer: enforced "
                                        "as a token bucket, steps that do not fit are skipped; a step is never "
                                        "interrupted); None (Python only): no cap")

    def __post_init__(self):
        check_fields(self)


@dataclass(frozen=True)
class ScheduleConfig:
    warmup: int = setting(500, flag="--dvi-warmup-steps", named=True, rule=at_least(0),
                          help="KD-only warm-up, in blocks")
    kl0: float = setting(1.0, flag="--dvi-kl-lambda0", named=True, help="KL weight at the start")
    klmin: float = setting(1.0, flag="--dvi-kl-lambdamin", named=True, help="KL weight after the ramp")
    pgmax: float = setting(0.2, flag="--dvi-pg-lambda-max", named=True, rule=at_least(0, WEIGHT),
                           help="PG weight after the ramp")

    def __post_init__(self):
        check_fields(self)
        if not self.kl0 >= self.klmin >= 0:
            raise ConfigError("need --dvi-kl-lambda0 >= --dvi-kl-lambdamin >= 0 (the KL weight decays from the first "
                              f"to the second; got {self.kl0} and {self.klmin})")


@dataclass(frozen=True)
class LoRAConfig:
    r: int = setting(64, flag="--dvi-lora-r", named=True, rule=at_least(1),
                     help="LoRA rank (default: the --load-lora checkpoint's, else --dvi-settings')")
    alpha: float = setting(64.0, flag="--dvi-lora-alpha", named=True, rule=above(0, "the LoRA scale; 0 trains nothing"),
                           help="LoRA scale alpha (default: the --load-lora checkpoint's, else --dvi-settings')")

    def __post_init__(self):
        check_fields(self)


@dataclass(frozen=True)
class DenseConfig:
    enabled: bool = setting(True, flag="--dvi-dense", named=True,
                            help="dense supervision: KD-only tuples from every committed position of a verify pass "
                                 "and from --dvi-prefill-positions prompt positions (CE and PG still train on drafted "
                                 "positions only)")
    prefill_positions: int = setting(32, flag="--dvi-prefill-positions", rule=at_least(0),
                                     help="with --dvi-dense true: prompt positions per prompt the verifier head scores "
                                          "in the prefill for KD-only tuples (evenly spread; 0: none)")

    def __post_init__(self):
        check_fields(self)


EXISTS = Rule("does not exist: pass a checkpoint .pt written by --save-lora-path", lambda p: not p or Path(p).is_file())


@dataclass(frozen=True)
class IOConfig:
    load: str = setting("", flag="--load-lora", rule=EXISTS, help="LoRA checkpoint to resume from or deploy")
    warm_start: str = setting("", flag="--dvi-warm-start",
                              rule=Rule("does not exist: build it with `python -m scripts.warm_start`",
                                        lambda p: not p or Path(p).is_file()),
                              help="an online run that starts afresh (no checkpoint to resume) starts its drafters "
                                   "from this warm start (python -m scripts.warm_start; dvi/warm_start.py), with a "
                                   "fresh optimizer; ignored when resuming")
    save_every: int = setting(0, flag="--save-lora-every", rule=at_least(0),
                              help="save every N blocks (0: only at the end)")
    save_dir: str = setting("runs/checkpoints", flag="--save-lora-path",
                            help="checkpoint folder; the last state is DIR/final.pt")
    metrics_out: str | None = setting(None, flag="--metrics-out", nullable=True,
                                      help="folder for acceptance.csv, speed.csv, trainer.csv and the plot (a .csv "
                                           "path means its folder); default runs/metrics for DVI runs, none for a "
                                           "plain Kangaroo run")
    metrics_every: int = setting(50, flag="--metrics-every", rule=at_least(1),
                                 help="print a summary line every N blocks")
    max_k: int = setting(6, source="steps", rule=at_least(1))  # acc@1..acc@K columns (the drafter's steps)
    debug_hk: bool = setting(False, flag="--dvi-debug-hk", action="store_true",
                             help="print hk count and bytes per block")

    def __post_init__(self):
        check_fields(self)


HELDOUT_SOURCE, HELDOUT_SKIP = "assets/sharegpt.jsonl", 2000  # the default held-out prompts: see HeldoutConfig.file
FILE_EXISTS = Rule("does not exist: pass a jsonl of prompts (or '' for the bundled ShareGPT slice)",
                   lambda p: not p or Path(p).is_file())


@dataclass(frozen=True)
class HeldoutConfig:
    positions: int = setting(512, flag="--heldout-positions", rule=at_least(0),
                             help="answer positions of the fixed held-out set, captured once with the frozen "
                                  "verifier, on which every trainable drafter is evaluated as deployed (top-1 "
                                  "agreement, teacher-forced accepted length); 0: no held-out evaluation")
    file: str = setting("", flag="--heldout-file", rule=FILE_EXISTS,
                        help="jsonl of held-out prompts, read from its first line: ShareGPT conversations, question "
                             "records (the first of their turns) or {\"prompt_ids\": [...]}; default: "
                             f"{HELDOUT_SOURCE} from its prompt {HELDOUT_SKIP} on, which no run trains on (the main "
                             "job, the server's load run and the benchmark train on its first few hundred)")
    tokens: int = setting(64, flag="--heldout-tokens", rule=at_least(1),
                          help="the verifier's greedy answer tokens per held-out prompt (one position each)")
    every: int = setting(50, flag="--heldout-every", rule=at_least(1),
                         help="evaluate the held-out set every N trainer steps (and at the start and the end)")
    cache: str = setting(".cache/heldout", flag="--heldout-cache",
                         help="folder of captured held-out sets, one file per model, exit layer, weights and source, "
                              "read by every later run; '': capture again in every run")

    def __post_init__(self):
        check_fields(self)


@dataclass(frozen=True)
class DVIConfig:
    online: bool = setting(False, flag="--dvi-online",
                           help="train the LoRA drafter head while decoding (the output stays the verifier's greedy "
                                "output, or its plain sampled output with the same seed)")
    buffer: BufferConfig = field(default_factory=BufferConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    dense: DenseConfig = field(default_factory=DenseConfig)
    io: IOConfig = field(default_factory=IOConfig)
    heldout: HeldoutConfig = field(default_factory=HeldoutConfig)

    def __post_init__(self):
        check_fields(self)
        if self.trainer.batch_size > self.buffer.capacity:
            raise ConfigError(f"--dvi-batch-size {self.trainer.batch_size} is larger than --dvi-buffer-size "
                              f"{self.buffer.capacity}: lower the batch or raise the buffer")

    @property
    def threaded(self) -> bool:
        return self.online and self.trainer.kind == "thread"

    def check_model(self, config) -> None:
        """The checks that need the model's config (``common.config_fields.check_against_model``)."""
        self.buffer.check_vocab(config.vocab_size)
