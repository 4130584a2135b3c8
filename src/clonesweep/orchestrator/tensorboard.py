"""TensorBoard logs of a sweep (``sweep.tensorboard: true``), written on the driver.

One folder per trial, ``<run folder>/tensorboard/trial-00003/``, so TensorBoard shows each
trial as a run: the monitored objective per epoch as its reports arrive (live curves), every
other metric of the trial's history (``loss``, ``val_loss``, ...) when it ends, and its
params with the HParams plugin (``hparam/<objective>`` its final value), so TensorBoard's
HParams view compares trials. View them with ``tensorboard --logdir runs/<name>/tensorboard``.

Written on the driver from the loop's events (the :class:`Progress` protocol), not on the
workers: the workers need no log folder that every node reaches, and a trial's logs are
whole even when it ran on a node that is gone. The events are written with tensorboardX
(pure Python, no TensorFlow import on the driver): the ``tensorboard`` extra.
"""

from __future__ import annotations

import math
from typing import Any

from clonesweep.errors import SpecError
from clonesweep.orchestrator.sweep import BestTrial, Counts, SweepOutcome
from clonesweep.spec.model import SweepSpec
from clonesweep.trials import TrialResult, TrialSpec

__all__ = ["TensorBoardLogs"]


class TensorBoardLogs:
    """A :class:`~clonesweep.orchestrator.sweep.Progress` that writes TensorBoard logs.

    Raises:
        SpecError: at construction, when tensorboardX is not installed.
    """

    def __init__(self, spec: SweepSpec) -> None:
        try:
            from tensorboardX import SummaryWriter
        except ImportError as exc:
            raise SpecError("sweep.tensorboard needs tensorboardX", file=str(spec.file),
                            field="sweep.tensorboard", value=True,
                            hint="pip install 'clonesweep[tensorboard]', or set it false")\
                from exc
        self._writer_class = SummaryWriter
        self.root = spec.run_folder / "tensorboard"
        self.metric = spec.objective.metric
        self._params: dict[int, dict[str, Any]] = {}
        self._writers: dict[int, Any] = {}
        self._live: dict[int, set[int]] = {}  # epochs of the objective written as reported

    def folder(self, number: int) -> str:
        return str(self.root / f"trial-{number:05d}")

    def _writer(self, number: int) -> Any:
        if number not in self._writers:
            self._writers[number] = self._writer_class(logdir=self.folder(number))
        return self._writers[number]

    def on_start(self, spec: SweepSpec, storage: str, already_finished: int) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def on_trial_start(self, spec: TrialSpec) -> None:
        self._params[spec.number] = dict(spec.params)
        self._live[spec.number] = set()

    def on_epoch(self, number: int, epoch: int, value: float) -> None:
        if math.isfinite(value):
            self._writer(number).add_scalar(self.metric, value, epoch + 1)
            self._live.setdefault(number, set()).add(epoch)

    def on_trial_end(self, result: TrialResult, counts: Counts, best: BestTrial | None,
                     retried: bool) -> None:
        if retried:  # the retry reports its epochs again; the run keeps the latest
            self._live[result.number] = set()
            return
        writer = self._writer(result.number)
        live = self._live.pop(result.number, set())
        for key, values in result.history.items():
            for epoch, value in enumerate(values):
                if (key != self.metric or epoch not in live) and math.isfinite(value):
                    writer.add_scalar(key, value, epoch + 1)
        params = {k: v if isinstance(v, bool | int | float | str) else str(v)
                  for k, v in self._params.pop(result.number, {}).items()}
        final = result.value
        if final is None:  # pruned or failed: its last reported value
            reported = [v for v in result.history.get(self.metric, []) if math.isfinite(v)]
            final = reported[-1] if reported else math.nan
        params["state"] = result.state.value + (f":{result.reason.value}" if result.reason
                                                else "")
        # The HParams session goes into the trial's own run, beside its curves, as
        # SummaryWriter.add_hparams writes it; add_hparams itself would open a second
        # writer on this folder, whose file can take the same name (same second, same host).
        from tensorboardX.summary import hparams

        metric = f"hparam/{self.metric}"
        for summary in hparams(params, {metric: final}):
            writer.file_writer.add_summary(summary)
        writer.add_scalar(metric, final)
        writer.close()
        del self._writers[result.number]

    def on_tick(self, counts: Counts, best: BestTrial | None, elapsed: float) -> None:
        pass

    def on_end(self, outcome: SweepOutcome) -> None:
        self.close()

    def close(self) -> None:
        """Close the writers of trials that did not end (an interrupt): what they wrote stays."""
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
