"""Reviewer evidence as one-command experiments (issue 12): named variants -> one online DVI run each (in-process,
resumable, identical data) -> one report (table.md, summary.json, a plot, command.txt) per output folder.

    runner.py        variants -> driver commands -> runs; resume (done.json) and refusal of other settings
    cli.py           the flags every experiment shares, and their checks
    series.py        one run's per-block metrics: rolling curves, segment and quarter stats
    spread.py        mean, std, min and max over runs; the band of several curves
    plots.py         curve panels (with bands) and grouped bars
    report_files.py  command.txt, table.md header, summary.json; what a --report-only rebuild keeps
    sweeps.py        seeds, exit_layer, steps, schedule: one run per value of one flag (sweep_report.py)
    heldout.py       a Spec-Bench category left out of training, then four frozen-drafter cells (heldout_report.py)
    question_mix.py  a question file in category round-robin order

    python -m scripts.experiments {seeds,exit_layer,steps,schedule,heldout} --out runs/exp_NAME [flags]

scripts/run_ablations.py (one run per loss preset) is built from the same runner and report parts.
"""
