"""One profiler, ``python -m scripts.profile MODE [flags]``; timing only: nothing is decoded for an answer and nothing
is asserted. Each mode writes OUT/NAME.md (also printed) and OUT/NAME.json (``report.py``).

  block     what one block costs on this machine, part by part (a greedy step, the shallow layers, the drafter
            heads, verify(n), a trainer step, one self-drafted token, batched steps), against the physical limits,
            per weight format, engine and thread count: OUT/block_costs.{md,json}
  shape     the same parts for a Llama of a given shape with random weights (7B on a GPU), with the projected
            speedup: OUT/block_costs.{md,json}
  overhead  the Python work of a decode loop per block, apart from the engine's time: OUT/overhead.{md,json}
  matmul    the engine's matmul alone, 1..N input rows, against this core's FMA rate: OUT/matmul.{md,json}
  engine    the engine's figures in one run (block and overhead above, our prefill) beside llama.cpp's llama-bench:
            OUT/README.md

The parts they share:

  measure.py     timing a block's parts on a KangarooModel (median of repeats after a warm-up; cold timings)
  limits.py      what bounds a step: the stream rate, the FMA rate, the bytes a token reads (the rate probes)
  draft.py       one self-drafted token's cost, per drafter vocabulary and head precision
  batch.py       one greedy step over c sequences at once (the server's batched calls)
  cost_model.py  pure: a block's modelled cost, the break-even and the tables
  report.py      the parser, the command line and the report files of every mode
"""
