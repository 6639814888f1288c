"""The commands around the library, by purpose (each has one entry; run them from the repository root).

What a user runs:

    bash scripts/main.sh              the main job: DVI online on ShareGPT beside greedy, then OUT/README.md
                                      (main_report.py)
    python -m scripts.warm_start      the feature drafter's warm start, built once and cached (main.sh runs it)
    bash scripts/test.sh              lint and the whole test suite (what CI runs)
    bash scripts/gpu_check.sh         on a CUDA machine: the tests on the GPU, float16 losslessness, a 7B profile
    python -m scripts.benchmark       every decoding method on Spec-Bench questions, lossless, timed (benchmark/)
    python -m scripts.serve_load      the server under concurrent clients, every answer checked (serve_load/)
    python -m scripts.peer_compare    our greedy and deployed decoding against llama.cpp's (peer_compare.py)
    bash scripts/record_all.sh        every headline figure in one run, in order, on a quiet machine

Profiling, one profiler with modes:

    python -m scripts.profile {block,shape,overhead,matmul,engine}        (profile/)

Research, every experiment behind one entry:

    python -m scripts.experiments {seeds,exit_layer,steps,schedule,heldout,ablations,drafter_sweep,ceiling,
                                   learnability,projection,feature_ceiling,feature_cost,replay_online,replay_lookup,
                                   standalone}      (experiments/)

Setup:

    bash scripts/setup.sh                        the pinned requirements and the bundled assets (main.sh and test.sh
                                                 run it first)
    python -m scripts.setup.fetch_assets         the assets alone (what setup.sh runs)
    bash scripts/setup/build_llamacpp.sh         llama.cpp's tools, for the peer comparison and the engine profile
    python -m scripts.setup.build_subvocab       the token counts of the pruned drafter vocabulary
"""
