"""SessionConfig: what a session is built on besides its drafter (``DrafterConfig``) and its learning (``DVIConfig``):
the model, where and how it runs, the Kangaroo adapter, the seed, and the drafter checkpoint it loads. Typed, frozen
and checked like the others (``common/config_fields.py``): each field carries its flag, and the command lines generate
those flags from here (``kangaroo_dvi/session_flags.py``).

Values a field may leave open, filled when the session is built (``kangaroo_dvi.session.build_session``) or by the
command line's resolve steps, with the same functions:

    device, dtype        None: cuda when visible, else cpu; float32 on cpu, float16 on cuda (``kangaroo.runtime``)
    adapter_mode auto    train when the drafter checkpoint holds a trained adapter, else load when ``adapter_path``
                         names a folder, else none (``choose_adapter``)
    adapter_window None  the drafter checkpoint's, else ``kangaroo.trained_adapter.DEFAULT_WINDOW``
    drafter_checkpoint   "": an online session resumes from the newest checkpoint of its save folder (unless
                         ``restart``)
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from common.config_fields import at_least, check_fields, setting
from common.errors import ConfigError
from kangaroo.model_loading import DTYPES
from kangaroo.runtime import DEVICE, choose_device
from kangaroo.stored_weights import WEIGHTS
from kangaroo.trained_adapter import DEFAULT_WINDOW, WINDOW_RULE, check_window

ADAPTER_MODES = ("auto", "none", "load", "train")
NO_ADAPTER_PATH = ("", "none")  # --adapter-path values that mean the identity adapter


@dataclass(frozen=True)
class SessionConfig:
    model_id: str = setting("", flag="--model-id",
                            help="Hugging Face id, local model folder, local .gguf file, or the alias 'smollm2-135m' "
                                 "(the bundled SmolLM2-135M-Instruct). Required.")
    device: str | None = setting(None, flag="--device", nullable=True, rule=DEVICE,
                                 help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
    dtype: str | None = setting(None, flag="--dtype", nullable=True, choices=tuple(DTYPES),
                                help="default: float32 on cpu, float16 on cuda")
    num_threads: int | None = setting(None, flag="--num-threads", nullable=True, rule=at_least(1),
                                      help="CPU threads for torch (default: torch's own choice); 1 lets two runs "
                                           "share 2 cores cleanly")
    engine: str = setting("auto", flag="--engine", choices=("auto", "plain"),
                          help="auto: decode steps and verify passes run the lean C++ CPU engine where it applies "
                               "(CPU, float32; kangaroo/cpu_engine.py); plain: PyTorch ops only")
    weights: str = setting("stored", flag="--weights", choices=WEIGHTS,
                           help="the bytes the CPU engine reads: stored = as the file holds them (a .gguf's blocks, a "
                                "16-bit checkpoint's weights; same floats as float32), float32 = the float32 weights; "
                                "the others convert (round/quantize) the model to that format "
                                "(kangaroo/stored_weights.py)")
    adapter_mode: str = setting("auto", flag="--adapter-mode", choices=ADAPTER_MODES,
                                help="load: the --adapter-path adapter, frozen; train: DVI trains an adapter online "
                                     "with the LoRA head (starting as the identity drafter, or from --adapter-path); "
                                     "auto: train when --load-lora holds a trained adapter, else load when "
                                     "--adapter-path is a path, else none")
    adapter_path: str | None = setting("none", flag="--adapter-path", nullable=True,
                                       help="Kangaroo adapter checkpoint folder, or 'none' for the identity adapter "
                                            "(no file access)")
    adapter_window: int | None = setting(None, flag="--dvi-adapter-window", nullable=True, rule=WINDOW_RULE,
                                         help="with --adapter-mode train: positions the adapter's attention sees "
                                              "(itself included), at draft time and in training; each buffer slot "
                                              "keeps that many layer-k rows (default: the --load-lora checkpoint's, "
                                              f"else {DEFAULT_WINDOW})")
    seed: int | None = setting(123, flag="--seed", nullable=True,
                               help="the run's seed: torch's generator at the start of the session, and with "
                                    "--temperature > 0 the sampling seed of every prompt (the same seed gives the "
                                    "same text, whoever drafts); None, in Python: torch's left as it is")
    drafter_checkpoint: str = setting("", source="load_lora")  # deployed, or resumed by an online session
    restart: bool = setting(False, source="overwrite")        # online: do not resume from the save folder

    def __post_init__(self):
        check_fields(self)
        if not self.model_id:
            raise ConfigError("--model-id is required: pass a Hugging Face id, a model folder, a .gguf file, or "
                              "smollm2-135m")


def choose_adapter(mode: str, path, window: int | None, saved_window: int | None,
                   trains: bool) -> tuple[str, str | None, int]:
    """(mode, path, window) with the open values filled: ``saved_window`` is the drafter checkpoint's trained adapter
    window (None: it has no adapter, or there is no checkpoint); ``trains``: the session learns online or loads a
    checkpoint. ``ConfigError`` (naming the flag) for a mode its inputs cannot serve."""
    no_path = path is None or str(path).strip().lower() in NO_ADAPTER_PATH
    window = window if window is not None else saved_window or DEFAULT_WINDOW
    check_window(window)
    if mode == "none":
        return mode, None, window
    if mode == "load" and no_path:
        raise ConfigError("--adapter-mode load needs --adapter-path DIR (a Kangaroo adapter folder); "
                          "or use --adapter-mode none for the identity adapter")
    if mode == "train" and not trains:
        raise ConfigError("--adapter-mode train trains the adapter online: pass --dvi-online true, or --load-lora "
                          "CKPT to deploy an adapter trained so")
    if mode == "auto":
        mode = "train" if saved_window is not None else "none" if no_path else "load"
    return mode, None if no_path else str(path), window


def resolved(cfg: SessionConfig, saved_window: int | None, trains: bool) -> SessionConfig:
    """``cfg`` with device, dtype and the adapter filled and checked (``choose_device``, ``choose_adapter``)."""
    device, dtype = choose_device(cfg.device, cfg.dtype)
    mode, path, window = choose_adapter(cfg.adapter_mode, cfg.adapter_path, cfg.adapter_window, saved_window, trains)
    return replace(cfg, device=device, dtype=dtype, adapter_mode=mode, adapter_path=path, adapter_window=window)
