"""Exports of a trained drafter (``python -m kangaroo_dvi.export CKPT --peft DIR --standalone DIR``):

  drafter      the checkpoint -> a deployed ``KangarooModel``; the merged head, the full-vocabulary LoRA B
  peft_adapter the LoRA drafter head as a PEFT adapter folder
  standalone   the drafter as a Hugging Face causal LM folder (a draft model for HF, vLLM, SGLang)
"""
from kangaroo_dvi.export.drafter import load_drafter, merged_head
from kangaroo_dvi.export.peft_adapter import export_peft
from kangaroo_dvi.export.standalone import export_standalone

__all__ = ["export_peft", "export_standalone", "load_drafter", "merged_head"]
