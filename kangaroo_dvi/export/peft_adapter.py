"""The LoRA drafter head as a PEFT adapter folder (``--peft DIR``).

    DIR/adapter_config.json          PEFT's LoraConfig: r, lora_alpha, target_modules ["lm_head"], no dropout
    DIR/adapter_model.safetensors    base_model.model.lm_head.lora_A.weight [r, d]
                                     base_model.model.lm_head.lora_B.weight [V, r] (a pruned head scattered back
                                     to full rows, zero elsewhere: those rows keep the base head's logits)
    DIR/kangaroo_dvi.json            exit layer, adapter window, drafter vocabulary: what PEFT cannot say
    DIR/kangaroo_adapter/            the trained Kangaroo adapter, when the drafter has one (``--adapter-path``)

PEFT's LoRA scales by lora_alpha / r like ``kangaroo.drafter_head.LoRALinear``, so ``PeftModel`` 's ``lm_head``
applied to the drafter features hk gives the drafter head's logits. The adapter is for the base model's
``lm_head``: applied to the last layer's features it is not the drafter; applied to layer k's (the first k layers,
the trained adapter, the final norm: what ``--standalone`` writes) it is.
"""
from __future__ import annotations

import json
from pathlib import Path

from common.atomic import atomic_write_text
from kangaroo_dvi.export.drafter import export_meta, full_lora_b

PREFIX = "base_model.model.lm_head"


def export_peft(model, out, ckpt="") -> Path:
    """Write the drafter head of ``model`` (a ``KangarooModel`` with a deployed LoRA head) as a PEFT adapter."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    p = model.drafter_head.proj
    base = str(getattr(model.base_model, "name_or_path", "") or model.model_id)
    LoraConfig(r=int(p.r), lora_alpha=float(p.alpha), target_modules=["lm_head"], lora_dropout=0.0, bias="none",
               task_type="CAUSAL_LM", base_model_name_or_path=base, inference_mode=True).save_pretrained(str(out))
    save_file({f"{PREFIX}.lora_A.weight": p.A.detach().float().cpu().contiguous(),
               f"{PREFIX}.lora_B.weight": full_lora_b(model).contiguous()}, str(out / "adapter_model.safetensors"))
    atomic_write_text(out / "kangaroo_dvi.json", json.dumps(export_meta(model, ckpt), indent=2))
    if model.trained_adapter is not None:
        from kangaroo.adapter import save_adapter

        save_adapter(model.trained_adapter, out / "kangaroo_adapter")
    return out
