"""Research: every experiment behind one entry, ``python -m scripts.experiments NAME [flags]`` (``__main__.py``).

Online experiments: named variants -> one online DVI run each (in-process, resumable, identical data) -> one report
(table.md, summary.json, a plot, command.txt) per output folder (issue 12):

    seeds, exit_layer, steps, schedule   one run per value of one driver flag (sweeps.py, sweep_report.py)
    heldout        a Spec-Bench category left out of training, then four frozen-drafter cells (heldout.py,
                   heldout_report.py, question_mix.py)
    ablations      one run per DVI loss preset (ablations.py)

    their parts: runner.py (variants -> driver runs; resume, refusal of other settings), cli.py (the flags they
    share), prompt_stream.py (the ShareGPT stream they decode), series.py (one run's per-block metrics), spread.py,
    plots.py, report_files.py (command.txt, table.md, summary.json)

Deployed drafters:

    drafter_sweep  the drafter's settings chosen by measured tokens/s: online runs, then every variant frozen on
                   Spec-Bench (drafter_sweep/)
    standalone     a trained drafter exported standalone vs the self-drafter (standalone.py)

Offline, over recorded greedy outputs (teacher_forced.py: the prompts, answers and teacher-forced tuples):

    ceiling        what a self-drafter can buy at each exit layer: profiles, offline training, ideal policies (ceiling/)
    learnability   how well and how fast a LoRA drafter head learns on layer-k features (ceiling/learnability.py)
    projection     the measured held-out skill priced at a 7B model's GPU costs: a projection (ceiling/projection.py)
    feature_ceiling  the feature drafter's offline ceiling on the main job's data (ceiling/feature_ceiling.py)
    feature_cost   the feature drafter's drafted token against a greedy step, both formats (ceiling/feature_cost.py)
    replay_online  online DVI learning replayed prequentially: objectives and their confidence (replay/online.py)
    replay_lookup  the n-gram and memory drafter chains replayed without the model (replay/lookup.py)
"""
