"""The process-wide side effects of a session's runtime settings, in one explicit call (never while parsing flags),
and the device a session runs on:

    num_threads   torch's intra-op threads (None: torch's own choice)
    engine        auto: decode steps and verify passes on the lean C++ CPU engine where it applies; plain: off
    weights       the bytes that engine reads for the models loaded later (kangaroo/stored_weights.py)
    device, dtype cuda when visible, else cpu; float32 on cpu, float16 on cuda
"""
from __future__ import annotations

from common.config_fields import Rule
from common.errors import ConfigError


def apply_runtime(cfg) -> None:
    """Apply ``cfg.num_threads`` (when given), ``cfg.engine`` (``auto`` when ``cfg`` has no such attribute) and
    ``cfg.weights`` (``stored`` likewise): ``cfg`` is a ``SessionConfig`` or a script's parsed flags."""
    import torch

    from kangaroo import cpu_engine
    from kangaroo.stored_weights import set_default_weights

    if getattr(cfg, "num_threads", None) is not None:
        torch.set_num_threads(cfg.num_threads)
    cpu_engine.set_enabled(getattr(cfg, "engine", "auto") == "auto")
    set_default_weights(getattr(cfg, "weights", "stored"))


def valid_device(device) -> bool:
    """cpu, cuda or cuda:N."""
    kind, _, index = str(device).partition(":")
    return kind in ("cpu", "cuda") and not (index and (kind == "cpu" or not index.isdigit()))


DEVICE = Rule("is not a device: use cpu, cuda or cuda:N (N the GPU index)", valid_device)


def choose_device(device: str | None, dtype: str | None) -> tuple[str, str]:
    """``device`` and ``dtype`` filled (None: by what is visible) and checked against this machine; a device that is
    not here, or float16 on cpu, raises ``ConfigError`` naming ``--device`` / ``--dtype``."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if not DEVICE.ok(device):
        raise ConfigError(DEVICE.message("--device", device))
    kind, _, index = device.partition(":")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device} but no CUDA device is visible: use --device cpu")
    if index and int(index) >= torch.cuda.device_count():
        raise ConfigError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) are visible "
                          f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    dtype = dtype or ("float32" if device == "cpu" else "float16")
    if device == "cpu" and dtype == "float16":
        raise ConfigError("--dtype float16 is not supported on cpu (slow and imprecise there): use float32 or bfloat16")
    return device, dtype
