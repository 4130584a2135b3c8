"""Training engines: Keras's own fit (``kerasfit.py``, the reference), the traced-graph engine
(``graphfit.py``), the fused engine (``fused.py`` with ``fusedgraph.py``); ``epochs.py`` is the
per-epoch work every engine shares."""
