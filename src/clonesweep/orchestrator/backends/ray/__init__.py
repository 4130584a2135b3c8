"""The Ray backend: the only place that imports ray.

- ``backend.py``: starting or joining Ray, submitting trials, collecting results.
- ``slots.py``: worker slots, which can run a trial now and which wait to be placed.
- ``actors.py``: the actor classes a worker process runs (imports no Optuna).
"""
