"""Fixtures of the scripts' tests."""
import json

import pytest


@pytest.fixture
def prompts(tmp_path):
    """A ShareGPT jsonl of three short prompts."""
    rows = [{"id": str(i), "conversations": [{"from": "human", "value": p}, {"from": "gpt", "value": "Sure."}]}
            for i, p in enumerate(("Tell me a joke.", "Explain rain.", "List three fruits."))]
    p = tmp_path / "sharegpt.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p
