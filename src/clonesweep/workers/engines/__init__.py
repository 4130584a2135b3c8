"""Training engines behind one contract (``base.py``): Keras's own fit (``kerasfit.py``, the
reference), the traced-graph engine (``graphfit.py``, with ``graphcover.py``: what it covers,
and ``graphops.py``: its ops), the fused engine for ensemble groups (``fused.py`` with
``stacked.py``, ``fusedgraph.py`` and ``fusedmetrics.py``); ``epochs.py`` is the per-epoch
work every engine shares, ``feeds.py`` what a worker keeps from its data for all trials."""
