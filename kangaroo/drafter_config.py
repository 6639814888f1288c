"""DrafterConfig -> drafter: resolve the ``auto`` choices, prune the drafter head, get the verify-cost curve.

``DrafterConfig`` (frozen) checks itself and carries its flags (``common/config_fields.py``): the command lines
generate the flags from it and build it once (``kangaroo_dvi/session_flags.py``); the Python API takes it as is.
Nothing here reads flags.

    auto drafter      deploying: AUTO_DRAFTER, ngram,memory,self (prompt lookup, the memory of earlier outputs,
                      the self-drafter; ngram,memory,feature,self for a checkpoint with a feature drafter); with
                      --dvi-online true: ONLINE_DRAFTER, ngram,feature,self, which trains the feature drafter too
                      (it drafts where its gate and the goodput policy say it pays), without the memory, which
                      would take the blocks the self-drafter's judged tuples come from
    auto policy       goodput, deployed and online alike: with the packed head a probe costs ~1-3% of a step, so
                      the gate probes nearly every block and the trainer gets the judged candidates (kept or
                      declined) and the dense KD rows of every block; threshold made every block draft, costing
                      the online run its speed
    auto vocabulary   the pruned vocabulary of the drafter checkpoint loaded, else DEFAULT_VOCAB (FR-Spec) where the
                      model's token counts are in data/subvocab
    head precision    auto: int8 on the engine, float32 (the stored rows) for a head stored in blocks
                      (kangaroo/packed_head.py); the LoRA merged when deployed
    auto tree width   goodput: decided at start-up by the measured cost curve (``draft_policy.auto_tree_width``: a
                      branch must be worth its verified row), so the default Q4_1 weights draft chains and float32
                      weights may draft trees; threshold: a chain

Call ``apply_drafter_vocab`` before ``drafter_head.attach_drafter_head`` (the LoRA lives on the pruned sub-head), and
``build_drafter`` after it (the cost curve's head time is that of the head in use).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from common.config_fields import Rule, above, at_least, check_fields, count_or_auto, setting, within
from common.errors import ConfigError, UserError
from kangaroo.draft_policy import Calibrator, GoodputPolicy, auto_tree_width, make_policy
from kangaroo.drafters import SuffixMemory, chain_names, make_drafter
from kangaroo.kangaroo_model import DEFAULT_EXIT_LAYER, check_exit_layer
from kangaroo.packed_head import PRECISIONS

AUTO_VOCAB = AUTO_WIDTH = -1  # the flags' auto
DEFAULT_VOCAB = 8192  # auto: the pruned drafter vocabulary when the model's token counts are in data/subvocab
AUTO_DRAFTER = "ngram,memory,self"
AUTO_FEATURE_DRAFTER = "ngram,memory,feature,self"  # deploying a checkpoint that holds a feature drafter
ONLINE_DRAFTER = "ngram,feature,self"
SEED_EXISTS = Rule("does not exist: pass an answer file of an earlier run", lambda p: not p or Path(p).is_file())


@dataclass(frozen=True)
class DrafterConfig:
    model_id: str = setting("", source="model_id")
    exit_layer: int = setting(DEFAULT_EXIT_LAYER, flag="--exitlayer", rule=at_least(1),
                              help="k: the first k layers form the drafter")
    drafter: str = setting("auto", flag="--drafter",
                           help="self: shallow layers + drafter head; ngram: prompt lookup; memory: lookup over "
                                "earlier outputs of the run; a chain such as ngram,memory,self: the first that drafts "
                                "wins the block (self last); feature: one decoder layer over the verifier's features "
                                "(EAGLE-1), trained online; hybrid: ngram,self; auto: ngram,memory,self "
                                "(ngram,memory,feature,self for a checkpoint that holds one), ngram,feature,self "
                                "with --dvi-online true")
    draft_policy: str = setting("auto", flag="--draft-policy", choices=("auto", "threshold", "goodput"),
                                help="threshold: Kangaroo's --threshold rule (>= 1 token per block); goodput: draft a "
                                     "token only if expected committed tokens per ms rises (measured verify-cost "
                                     "curve); auto: goodput")
    threshold: float = setting(0.6, flag="--threshold", rule=within(0, 1, "a probability"),
                               help="stop drafting a block when the drafter's top-1 probability falls under this")
    steps: int = setting(6, flag="--steps", rule=at_least(1, "tokens drafted per block at most"),
                         help="at most this many drafted tokens per block")
    tree_width: int = setting(AUTO_WIDTH, flag="--tree-width", type=count_or_auto(AUTO_WIDTH, "a width"),
                              rule=Rule("must lie in -1..8", lambda w: AUTO_WIDTH <= w <= 8,
                                        "0 or 1: chains; -1 or auto: auto"),
                              help="token trees: at most this many drafted candidates follow a token (its next "
                                   "choices as branches, verified in the same pass; a tree has at most --steps "
                                   "nodes); 0 or 1: chains; auto: what the measured cost curve says pays (goodput; "
                                   "threshold: chains)")
    ngram_min: int = setting(1, flag="--ngram-min", rule=at_least(1),
                             help="shortest n-gram the n-gram drafter matches")
    ngram_max: int = setting(3, flag="--ngram-max", help="longest n-gram the n-gram drafter matches (tried first)")
    memory_tokens: int = setting(65536, flag="--memory-tokens", rule=at_least(1, "the memory drafter's bound"),
                                 help="memory drafter: tokens of earlier outputs kept (the oldest outputs are evicted "
                                      "first)")
    memory_seed: str = setting("", flag="--memory-seed", rule=SEED_EXISTS,
                               help="memory drafter: an answer file of an earlier run (jsonl with token_ids, as the "
                                    "drivers write them) whose outputs start the memory; default: it starts empty")
    cost_curve: str = setting("", flag="--cost-curve",
                              help="goodput: JSON verify-cost curve to read; if the file does not exist the run "
                                   "measures the curve at startup and writes it there (default: measure, do not save)")
    goodput_prior: float = setting(4.0, flag="--goodput-prior", rule=above(0),
                                   help="goodput: weight (in observations) of the drafter's raw confidence as the "
                                        "acceptance prior")
    drafter_vocab: int = setting(AUTO_VOCAB, flag="--drafter-vocab", type=count_or_auto(AUTO_VOCAB, "a token count"),
                                 rule=at_least(AUTO_VOCAB, "0: the full vocabulary; -1 or auto: auto"),
                                 help="pruned drafter head (FR-Spec): draft only the N most frequent tokens; 0: full "
                                      "vocabulary; auto: that of the --load-lora checkpoint, else 8192 where "
                                      "data/subvocab has the model's token counts")
    drafter_vocab_file: str = setting("", flag="--drafter-vocab-file",
                                      help="token counts (python -m scripts.setup.build_subvocab) for --drafter-vocab; "
                                           "default data/subvocab/<model>.counts.npz, counted from "
                                           "assets/sharegpt.jsonl when missing")
    head_precision: str = setting("auto", flag="--drafter-head-precision", choices=PRECISIONS,
                                  help="the drafter head's weights on the CPU engine (the verifier stays float32, so "
                                       "outputs do not change): int8 (VNNI), bf16, float32; auto: float32 where the "
                                       "head is stored in blocks (a GGUF's Q8_0 rows, the faster there), else int8 "
                                       "where the engine's kernel is built")
    probe_gate: bool = setting(True, flag="--probe-gate",
                               help="goodput: ask the self-drafter only when a model of what is already known (the "
                                    "verifier's probability of its last token, recent agreement) says a probe can pay; "
                                    "false: a fixed backoff")
    feature_window: int = setting(8, flag="--feature-window", rule=at_least(1, "entries the layer attends to"),
                                  help="feature drafter: the entries its decoder layer attends to (itself included), "
                                       "at draft time as in training; a deployed one keeps its checkpoint's")
    calibration_decay: float = setting(0.995, rule=within(0, 1),
                                       help="goodput: the calibrator forgets old verdicts (a drafter learning online)")

    def __post_init__(self):
        check_fields(self)
        if self.drafter != "auto":
            try:
                chain_names(self.drafter)
            except ValueError as e:
                raise ConfigError(f"--drafter: {e}") from None
        if self.ngram_max < self.ngram_min:
            raise ConfigError(f"need 1 <= --ngram-min <= --ngram-max (got {self.ngram_min} and {self.ngram_max})")

    def check_model(self, config) -> None:
        """The checks that need the model's config (``common.config_fields.check_against_model``)."""
        check_exit_layer(self.exit_layer, config)
        if self.drafter_vocab > config.vocab_size:
            raise ConfigError(f"--drafter-vocab {self.drafter_vocab} is larger than the vocabulary "
                              f"({config.vocab_size}): lower it, or 0 for the full vocabulary")


SPECULATION_FLAGS = ("--exitlayer", "--threshold", "--steps")  # the Kangaroo block, shared by drivers and scripts


def resolve_auto(cfg: DrafterConfig, online: bool = False, feature: bool = False) -> DrafterConfig:
    """``auto`` drafter: ``ONLINE_DRAFTER`` online, else ``AUTO_DRAFTER`` (``AUTO_FEATURE_DRAFTER``: ``feature``)."""
    auto = ONLINE_DRAFTER if online else AUTO_FEATURE_DRAFTER if feature else AUTO_DRAFTER
    return replace(cfg, drafter=auto if cfg.drafter == "auto" else cfg.drafter,
                   draft_policy="goodput" if cfg.draft_policy == "auto" else cfg.draft_policy)


def wants_feature_drafter(cfg: DrafterConfig, online: bool = False) -> bool:
    """Whether the chain ``cfg`` names (``auto`` resolved) has a feature drafter: the model then needs one attached
    (``kangaroo.feature_drafter.attach_feature_drafter``, after ``apply_drafter_vocab``: the session builder does)
    before its caches are made."""
    return "feature" in chain_names(resolve_auto(cfg, online).drafter)


def apply_drafter_vocab(cfg: DrafterConfig, model, tokenizer=None, print_fn=print, trained_on=None):
    """Prune the drafter head to ``cfg.drafter_vocab`` N tokens (no-op for 0). Counts come from
    ``cfg.drafter_vocab_file``, or are counted once from assets/sharegpt.jsonl and written to the default path.
    ``trained_on``: the pruned vocabulary (ids) of the drafter checkpoint this run loads; with auto, or N its size,
    those ids are the vocabulary (the checkpoint's tensors load only into those rows)."""
    from kangaroo.greedy import eos_ids_of
    from kangaroo.subvocab import count_tokens, default_counts_path, load_counts, save_counts, top_ids

    if trained_on is not None and cfg.drafter_vocab in (AUTO_VOCAB, len(trained_on)):
        model.set_drafter_vocab(trained_on)
        return model.drafter_vocab
    path = Path(cfg.drafter_vocab_file) if cfg.drafter_vocab_file else default_counts_path(cfg.model_id)
    n = auto_vocab(cfg, model, path)
    if not n:
        return None
    if path.is_file():
        counts, meta = load_counts(path)
    elif cfg.drafter_vocab_file:
        raise UserError(f"--drafter-vocab-file {path} does not exist: write it with "
                        "python -m scripts.setup.build_subvocab")
    else:
        src = Path(__file__).resolve().parent.parent / "assets" / "sharegpt.jsonl"
        if not src.is_file() or tokenizer is None:
            raise UserError(f"--drafter-vocab needs token counts: {path} is missing and {src} cannot be counted; "
                            "run python -m scripts.setup.build_subvocab (or bash scripts/setup.sh first)")
        print_fn(f"[drafter] counting tokens of {src} for the pruned drafter vocabulary (once) -> {path}")
        counts = count_tokens(tokenizer, src, model.config.vocab_size)
        save_counts(path, counts, {"model_id": cfg.model_id, "source": str(src), "tokens": int(counts.sum())})
    if len(counts) != model.config.vocab_size:
        raise UserError(f"{path} counts {len(counts)} tokens but the model's vocabulary has "
                        f"{model.config.vocab_size}: pass counts made with this model's tokenizer")
    ids = top_ids(counts, n, always=eos_ids_of(tokenizer, model.config) if tokenizer is not None else ())
    model.set_drafter_vocab(ids)
    return ids


def auto_vocab(cfg: DrafterConfig, model, counts_path: Path) -> int:
    """``cfg.drafter_vocab``, with auto resolved: ``DEFAULT_VOCAB`` when this model's token counts exist (the
    bundled model's are in data/subvocab) and its vocabulary is at least twice that, else the full vocabulary."""
    if cfg.drafter_vocab != AUTO_VOCAB:
        return cfg.drafter_vocab
    fits = model.config.vocab_size >= 2 * DEFAULT_VOCAB and counts_path.is_file()
    return DEFAULT_VOCAB if fits else 0


def cost_curve(cfg: DrafterConfig, model, print_fn=print):
    from kangaroo.verify_cost import CostCurve, measure_cost_curve

    path = Path(cfg.cost_curve) if cfg.cost_curve else None
    if path is not None and path.is_file():
        try:
            return CostCurve.from_json(path)
        except (ValueError, KeyError) as e:
            raise UserError(f"--cost-curve {path} is not a cost curve ({e}): delete it to measure afresh") from e
    cost = measure_cost_curve(model, cfg.steps + 1)
    print_fn("[drafter] verify cost (ms) for n=1..{}: deep {} shallow {} head {:.2f}{}".format(
        cfg.steps + 1, [round(x, 2) for x in cost.deep_ms], [round(x, 2) for x in cost.shallow_ms], cost.head_ms,
        f" feature {cost.feature_ms:.2f}" if cost.feature_ms else ""))
    if path is not None:
        cost.to_json(path)
    return cost


def read_outputs(path: Path) -> list[list[int]]:
    """The token ids of every turn of an answer file (jsonl lines with ``token_ids``, as the drivers write them)."""
    if not path.is_file():  # a DrafterConfig has checked it; the lookup replay passes its own flag
        raise UserError(f"--memory-seed {path} does not exist: pass an answer file of an earlier run")
    outputs = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            outputs += [[int(t) for t in turn] for turn in json.loads(line)["token_ids"]]
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"--memory-seed {path}, line {n}: not an answer with token_ids ({e!r}): pass an answer "
                            "file written by evaluation.inference_kangaroo or evaluation.inference_baseline") from None
    return outputs


def new_memory(cfg: DrafterConfig, online: bool = False) -> SuffixMemory | None:
    """The memory drafter's store (None when ``cfg``'s chain has no memory drafter), holding the outputs of
    ``cfg.memory_seed`` if given: share it between the drafters of one run (a server: one store, one drafter per
    concurrent sequence)."""
    if "memory" not in chain_names(resolve_auto(cfg, online).drafter):
        return None
    memory = SuffixMemory(cfg.memory_tokens)
    if cfg.memory_seed:
        for output in read_outputs(Path(cfg.memory_seed)):
            memory.add(output)
    return memory


def build_drafter(cfg: DrafterConfig, model, print_fn=print, cost=None, online: bool = False,
                  memory: SuffixMemory | None = None, calibrator: Calibrator | None = None):
    """The drafter chain ``cfg`` names (``auto`` resolved; ``online``: the run trains the drafter); a goodput policy
    measures (or reads) the verify-cost curve unless ``cost`` is given. ``memory``: a shared store for the memory
    drafter (default: ``new_memory(cfg)``); ``calibrator``: one goodput calibration shared by every drafter built
    with it (a server's requests; its counts are keyed by draft source), else one per drafter."""
    from kangaroo.packed_head import configure

    cfg = resolve_auto(cfg, online, getattr(model, "feature_drafter", None) is not None)
    if wants_feature_drafter(cfg, online) and getattr(model, "feature_drafter", None) is None:
        raise UserError(f"--drafter {cfg.drafter} names feature, but no feature drafter is attached: train one "
                        "(--dvi-online true) or deploy one (--load-lora CKPT that holds one)")
    configure(model, cfg.head_precision, frozen=not online)  # before the cost curve times the head
    if getattr(model, "feature_drafter", None) is not None:  # its own head, packed the same way
        configure(model.feature_drafter, cfg.head_precision, frozen=not online)
    if cfg.draft_policy == "goodput" and cost is None:
        cost = cost_curve(cfg, model, print_fn)
    shared = calibrator if calibrator is not None and cfg.draft_policy == "goodput" else None
    return make_drafter(cfg.drafter, cfg.steps, policy_factory(cfg, cost, shared, online), cfg.ngram_min, cfg.ngram_max,
                        memory if memory is not None else new_memory(cfg), tree_width(cfg, cost, print_fn))


def tree_width(cfg: DrafterConfig, cost=None, print_fn=print) -> int:
    """``cfg.tree_width`` (0 and 1: chains), or auto: ``auto_tree_width`` of the cost curve under goodput (said in
    one line when it branches), else 1. ``cfg``'s policy is resolved (``resolve_auto``)."""
    if cfg.tree_width != AUTO_WIDTH:
        return max(1, cfg.tree_width)
    if cfg.draft_policy != "goodput" or cost is None:
        return 1
    width = auto_tree_width(cost)
    if width > 1:
        share = (cost.row_ms + cost.shallow_row_ms) / (cost.shallow_ms[0] + cost.deep_ms[0])
        print_fn(f"[drafter] token trees of width {width}: a verified row costs {share:.3f} of a step, so the "
                 "drafter's next choices may pay as branches (--tree-width 1: chains)")
    return width


def policy_factory(cfg: DrafterConfig, cost, calibrator: Calibrator | None = None, online: bool = False):
    """One new policy per call, as ``cfg`` says: each drafter calibrates apart, unless ``calibrator`` is one shared
    goodput calibration (a server's requests); every goodput policy gets its own probe gate (``--probe-gate``;
    ``online``: the drafter learns, so its probes are labels too)."""
    if calibrator is not None:
        from kangaroo.probe_gate import ProbeGate

        return lambda: GoodputPolicy(cost, calibrator, gate=ProbeGate(cost, online) if cfg.probe_gate else None)
    return lambda: make_policy(cfg.draft_policy, cfg.threshold, cost, cfg.goodput_prior, gate=cfg.probe_gate,
                               decay=cfg.calibration_decay, learning=online)
