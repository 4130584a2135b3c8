"""Worker slots of the Ray backend: which can run a trial now, which wait to be placed.

A slot is one long-lived worker actor (``max_restarts=-1``). It is *live* once its actor
answered ``where()`` since its last (re)start, and *down* from the moment it may have died (a
trial on it failed, its node left the cluster) until a probe, ``where()``, answers. A probe
that meets the actor restarting (or not placed yet) fails at once and is sent again a second
later: Ray's own task retries would print a line on the driver's stdout for each. An actor whose
``__init__`` raised is *broken* for good: trials sent to it fail at once with its error.

Losing a node: its slots go down and Ray re-places their actors wherever the resources are.
The sweep goes on with the slots that remain (a warning says how many); a down slot comes
back by itself once a node with room joins. Only when no slot can run and the live nodes cannot
hold even one worker (each needs ``sweep.resources``) for ``sweep.resource_wait`` seconds does
:meth:`SlotPool.check_starved` raise :class:`~clonesweep.errors.SweepFailed`, naming what is
missing. Capacity is what the live nodes hold in all, not what other jobs leave free at the
moment: a worker that fits is waited for, as Ray queues it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from clonesweep.errors import SweepFailed
from clonesweep.orchestrator.backends.ray._ray import actor_init_failed, start_failure
from clonesweep.spec.model import ResourcesSpec
from clonesweep.trials import FailReason

__all__ = ["Slot", "SlotPool", "first_line", "fit_slots", "on_driver_node"]

log = logging.getLogger(__name__)

# How often the driver reads the cluster's nodes (one GCS call) to notice a lost node.
_NODES_CHECK_S = 2.0
# How soon a probe that found its actor away is sent again.
_PROBE_AGAIN_S = 1.0


@dataclass
class Slot:
    """One worker actor and what the driver knows of it."""

    actor: Any
    name: str
    node: str | None = None  # where its actor last answered from
    live: bool = False
    busy: bool = False
    probe: Any = None  # the ObjectRef of an outstanding where() probe
    probe_at: float | None = None  # when to send the next probe, if none is out
    broken: tuple[FailReason, str] | None = None  # its actor is dead for good, and why


@dataclass(frozen=True)
class _Node:
    id: str
    cpu: float
    gpu: float


class SlotPool:
    """The slots of one backend, their liveness, and the cluster's room for them.

    Driven from the backend's thread only. ``need`` is one worker's resources, ``wait_s`` the
    longest time work may wait with no slot able to run (``sweep.resource_wait``).
    """

    def __init__(self, actors: list[Any], need: ResourcesSpec, wait_s: float) -> None:
        self.slots = [Slot(actor, f"worker-{i}") for i, actor in enumerate(actors)]
        self._need, self._wait_s = need, wait_s
        self._nodes: dict[str, _Node] = {}
        self._lost: dict[str, _Node] = {}  # nodes that hosted a slot, then left
        self._checked = float("-inf")
        self._starved_since: float | None = None
        for index in range(len(self.slots)):
            self.down(index)
        self.check_nodes()

    # -- liveness ---------------------------------------------------------------------------
    def down(self, index: int) -> None:
        """Slot ``index`` may have died: stop sending it trials until its probe answers."""
        slot = self.slots[index]
        slot.live = False
        if slot.probe is None and slot.broken is None:
            slot.probe, slot.probe_at = slot.actor.where.remote(), None

    def probes(self) -> dict[Any, int]:
        """The outstanding probes (ObjectRef -> slot), after sending those that are due."""
        now = time.monotonic()
        for slot in self.slots:
            if slot.probe_at is not None and slot.probe_at <= now:
                slot.probe, slot.probe_at = slot.actor.where.remote(), None
        return {s.probe: i for i, s in enumerate(self.slots) if s.probe is not None}

    def answered(self, index: int, ref: Any) -> None:
        """Slot ``index``'s probe ``ref`` is ready: the slot is live again, or broken."""
        import ray

        slot = self.slots[index]
        slot.probe = None
        try:
            node, _pid = ray.get(ref)
        except ray.exceptions.ActorUnavailableError:
            slot.probe_at = time.monotonic() + _PROBE_AGAIN_S  # restarting, or not placed
            return
        except ray.exceptions.RayError as exc:
            slot.broken = (
                (FailReason.USER_ERROR, f"worker failed to start: {start_failure(exc)}")
                if actor_init_failed(exc) else
                (FailReason.WORKER_DIED, f"{slot.name} is gone for good: {first_line(exc)}"))
            return
        was_lost = slot.node in self._lost
        slot.node, slot.live = str(node), True
        if was_lost:
            log.warning("%s is back, on node %s: %d of %d worker slots can run",
                        slot.name, _short(slot.node), self.usable(), len(self.slots))

    def idle(self) -> int | None:
        """An idle slot that can take a trial now: a live one first, then a broken one
        (whose trials fail at once, so the sweep's error counting sees them)."""
        for want_live in (True, False):
            for i, s in enumerate(self.slots):
                if not s.busy and (s.live if want_live else s.broken is not None):
                    return i
        return None

    def usable(self) -> int:
        """Slots that run trials now or will once placed: live, broken, and down slots that
        fit on the live nodes next to the live ones."""
        down = sum(not s.live and s.broken is None for s in self.slots)
        ready = len(self.slots) - down
        return ready + min(down, self._room())

    def _room(self) -> int:
        """How many more workers the live nodes can hold, besides this sweep's live ones."""
        held: dict[str, int] = {}
        for s in self.slots:
            if s.live and s.node is not None:
                held[s.node] = held.get(s.node, 0) + 1
        room = 0
        for node in self._nodes.values():
            fits = [int(have // want + 1e-9) for have, want in
                    ((node.cpu, self._need.cpu), (node.gpu, self._need.gpu)) if want > 0]
            room += max(0, min(fits, default=0) - held.get(node.id, 0))
        return room

    # -- the cluster ------------------------------------------------------------------------
    def check_nodes(self, now: float | None = None) -> list[int]:
        """Read the live nodes (at most every few seconds); returns the live slots whose node
        has left the cluster (now down: their running trials are lost)."""
        import ray

        now = time.monotonic() if now is None else now
        if now - self._checked < _NODES_CHECK_S:
            return []
        self._checked = now
        nodes = {}
        for n in ray.nodes():
            if n.get("Alive"):
                res = n.get("Resources", {})
                nodes[n["NodeID"]] = _Node(n["NodeID"], float(res.get("CPU", 0.0)),
                                           float(res.get("GPU", 0.0)))
        gone = [old for key, old in self._nodes.items() if key not in nodes]
        self._nodes = nodes
        hit = [i for i, s in enumerate(self.slots) if s.live and s.node not in nodes]
        for index in hit:
            self.down(index)
        lost = [node for node in gone if any(s.node == node.id for s in self.slots)]
        self._lost.update({node.id: node for node in lost})
        if lost:
            self._warn_lost(lost)
        return hit

    def _warn_lost(self, lost: list[_Node]) -> None:
        ids = {node.id for node in lost}
        names = ", ".join(s.name for s in self.slots if s.node in ids)
        which = ", ".join(_short(node.id) for node in lost)
        usable = self.usable()
        if usable:
            log.warning("lost Ray node %s: %s must be placed again; %d of %d worker slots can "
                        "run on the live nodes (each needs %s): the sweep goes on with them, "
                        "and a lost slot comes back once a node with room joins", which, names,
                        usable, len(self.slots), self._needs())
        else:
            log.warning("lost Ray node %s: no worker slot fits on the live nodes (each needs "
                        "%s); trials wait up to %g s (sweep.resource_wait) for a node to join",
                        which, self._needs(), self._wait_s)

    def check_starved(self, waiting: bool, now: float | None = None) -> None:
        """Raise SweepFailed once work has waited ``wait_s`` with no slot able to run."""
        now = time.monotonic() if now is None else now
        if not waiting or self.usable() > 0:
            self._starved_since = None
            return
        if self._starved_since is None:
            self._starved_since = now
        elif now - self._starved_since >= self._wait_s:
            raise SweepFailed(self._starved_message(now - self._starved_since))

    def _starved_message(self, waited: float) -> str:
        totals = {"CPU": sum(n.cpu for n in self._nodes.values()),
                  "GPU": sum(n.gpu for n in self._nodes.values())}
        held = {"CPU": self._need.cpu * sum(s.live for s in self.slots),
                "GPU": self._need.gpu * sum(s.live for s in self.slots)}
        have = ", ".join(f"{max(0.0, totals[k] - held[k]):g} {k} free of {totals[k]:g}"
                         for k, want in (("CPU", self._need.cpu), ("GPU", self._need.gpu))
                         if want > 0)
        after = (f"after losing node {', '.join(_short(k) for k in self._lost)} "
                 if self._lost else "")
        return (f"each trial needs {self._needs()} (sweep.resources), but none of the "
                f"{len(self.slots)} worker slots can be placed: {after}the live Ray nodes "
                f"have {have}; waited {waited:.0f} s (sweep.resource_wait). Add nodes or "
                "lower sweep.parallel / sweep.resources; trials that were running were "
                "re-queued and `clonesweep resume FILE` continues the sweep")

    def _needs(self) -> str:
        parts = [f"{v:g} {k}" for k, v in (("CPU", self._need.cpu), ("GPU", self._need.gpu))
                 if v > 0]
        return " + ".join(parts) or "no resources"


def _short(node: str | None) -> str:
    return (node or "?")[:12]


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__


def fit_slots(need: ResourcesSpec, slots: int) -> int:
    """Refuse a per-trial request the cluster can never meet; cap slots to what fits."""
    import ray

    total = ray.cluster_resources()
    fits = []
    for key, want in (("CPU", need.cpu), ("GPU", need.gpu)):
        if want > 0:
            have = float(total.get(key, 0.0))
            if have < want:
                raise SweepFailed(
                    f"each trial asks for {want:g} {key} (sweep.resources) but the Ray "
                    f"cluster has {have:g} {key} in all; lower sweep.resources or add nodes")
            fits.append(int(have // want + 1e-9))
    if fits and min(fits) < slots:
        log.warning("the cluster fits %d trials at once, not %d: running %d in parallel",
                    min(fits), slots, min(fits))
        return min(fits)
    return slots


def on_driver_node() -> Any:
    """A scheduling strategy pinning an actor to the driver's own node: the broker needs no
    resources, so Ray could put it anywhere, and a broker lost with a worker node would take
    every report with it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    try:
        node = ray.get_runtime_context().get_node_id()
    except Exception:  # a Ray Client driver has no node of its own
        return "DEFAULT"
    # Not soft: Ray spills a soft-pinned actor to other nodes now and then.
    return NodeAffinitySchedulingStrategy(node_id=node, soft=False)
