"""What the runs need, built or fetched once: the bundled assets (``fetch_assets.py``, what ``scripts/setup.sh``
runs), llama.cpp's tools for the peer comparison (``build_llamacpp.sh``) and the pruned drafter vocabulary's token
counts (``build_subvocab.py``)."""
