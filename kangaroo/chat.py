"""Chat messages -> prompt token ids, as every entry point renders them (drivers, server, library): fschat's
``vicuna_v1.1`` template for Vicuna models and the tokenizer's own chat template otherwise."""
from __future__ import annotations

import torch


def uses_vicuna_template(model_id: str) -> bool:
    return "vicuna" in str(model_id).lower()


def chat_prompt_ids(tokenizer, messages: list[dict], model_id: str, device="cpu") -> torch.Tensor:
    """[1, n] token ids of ``messages`` (dicts with role/content) followed by the assistant's turn."""
    if uses_vicuna_template(model_id) or not getattr(tokenizer, "chat_template", None):
        from fastchat.conversation import get_conv_template

        conv = get_conv_template("vicuna_v1.1")
        for m in messages:
            conv.append_message(conv.roles[0] if m["role"] == "user" else conv.roles[1], m["content"])
        conv.append_message(conv.roles[1], None)
        ids = tokenizer(conv.get_prompt()).input_ids
    else:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                            return_dict=True)["input_ids"]
    return torch.tensor([ids], device=device)
