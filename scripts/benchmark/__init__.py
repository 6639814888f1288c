"""The method comparison on Spec-Bench, one entry (``python -m scripts.benchmark``), in parts:

  cli      flags, question selection, the DVI drafter to deploy (trained first if asked), the run
  methods  the decoding methods (ours and Hugging Face's), the forward-call counter, one question decoded by all
  store    OUT/raw.jsonl (a common.jsonl_store.JsonlStore; one per repeat), OUT/config.json (a resumed run keeps its
           settings) and the Spec-Bench answer files
  spec_bench  pure: Spec-Bench's answer-file shape and the semantics of its speed.py and equal.py
  report   pure: each repeat's records -> summary (speeds via spec_bench) -> table.md, summary.json, speedup.png
  sources  pure: records -> per method, per draft source: passes, tokens per pass, time (the end of table.md)
"""
