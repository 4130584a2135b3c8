"""The Optuna study of a sweep: opening its storage, the journal, the outbox, the lease, resume.

- ``setup.py``: a sweep's study set up in order (sampler once, resume checks, lease, recovery).
- ``storage.py``: storage URLs, opening storages and the study, batched attribute writes.
- ``plugins.py``: samplers and pruners by name (checked against their signatures), distributions.
- ``tpe.py``: TPE's history kept across asks; ``parzen.py``: its candidates' log-density.
- ``journal.py``: the group-commit journal file.
- ``outbox.py``: results held while the storage is unreachable.
- ``lease.py``: one driver per sweep.
- ``resume.py``: what a driver does with trials an earlier driver left.
- ``check.py``: probing a storage without creating anything.
"""
