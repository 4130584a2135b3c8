"""The plot of bench/pruning_race.py: best-so-far val_accuracy against wall time, as a PNG.

matplotlib (the ``bench`` extra: ``pip install "clonesweep[bench]"``) is imported when a plot
is drawn, so the race's other parts run without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot(lines: list[dict[str, Any]], path: Path) -> None:
    """Every run's best-so-far curve against seconds since its launch, as a PNG; each curve
    runs on flat to its tool's wall, a dot marks where clonesweep reached Ray Tune's best."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"clonesweep": "tab:blue", "raytune": "tab:orange"}
    names = {"clonesweep": "clonesweep", "raytune": "Ray Tune (ASHA)"}
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    values = [v for line in lines if not line.get("race") for _, v in line["curve"]]
    for line in lines:
        if line.get("race"):
            ax.axhline(line["raytune_best"], color=colors["raytune"], lw=0.6, ls=":")
            if line["clonesweep_reach_s"] is not None:
                ax.plot(line["clonesweep_reach_s"], line["raytune_best"], "o",
                        color=colors["clonesweep"], ms=5)
            continue
        if not line["curve"]:
            continue
        ts, vs = zip(*line["curve"], strict=True)
        label = names[line["tool"]] + ("" if line["tool"] == "raytune"
                                       else f", {line['scheduler']}")
        ax.step([*ts, line["wall_s"]], [*vs, vs[-1]], where="post", color=colors[line["tool"]],
                ls=("-", "--", "-.", ":")[line["round"] % 4],
                label=f"{label}, round {line['round']}")
        ax.plot(line["wall_s"], vs[-1], "|", color=colors[line["tool"]], ms=12)
    if values:  # the race is at the top: the first epochs' low values would flatten it
        ax.set_ylim(max(0.0, max(values) - 0.15), min(1.0, max(values) + 0.01))
    ax.set_xlim(left=0)
    ax.set_xlabel("seconds since the tool's command started (| : its wall)")
    ax.set_ylabel("best val_accuracy so far (any trial, any epoch)")
    first = next((line for line in lines if not line.get("race")), None)
    if first is not None:
        ax.set_title(f"digits CNN+BN, {first['trials']} trials x <= {first['epochs']} epochs, "
                     f"{first['parallel']} at a time", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
