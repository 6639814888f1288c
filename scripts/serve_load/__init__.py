"""The serving load run (``python -m scripts.serve_load``): the server, concurrent clients, the report."""
