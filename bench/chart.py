"""The chart of a bench run: throughput and latency percentiles per scenario and server.

python -m bench.chart bench/results/latest.json bench/results/latest.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

SERVERS = (
    "regserve",
    "regserve pinned",
    "regserve x2",
    "regserve x2 pinned",
    "bare sync",
    "bare sync pinned",
    "bare sync shared",
    "bare aio",
    "fastapi",
)
_PALETTE = ("#1f6fb4", "#2f9e6e", "#6aa8dc", "#8fd1b0", "#7f7f7f", "#4d4d4d", "#a3a3a3", "#d0d0d0", "#e08a2c")
COLOURS = dict(zip(SERVERS, _PALETTE, strict=True))


def _grouped_bars(axis, scenarios: list[str], results: dict, value, *, label: str) -> None:
    servers = [s for s in SERVERS if any(s in results[name] for name in scenarios)]
    width = 0.8 / max(1, len(servers))
    for index, server in enumerate(servers):
        xs, ys = [], []
        for position, name in enumerate(scenarios):
            figure = results[name].get(server)
            if figure is not None and value(figure) is not None:
                xs.append(position + (index - (len(servers) - 1) / 2) * width)
                ys.append(value(figure))
        axis.bar(xs, ys, width, label=server, color=COLOURS[server])
    axis.set_xticks(range(len(scenarios)), scenarios, rotation=20, ha="right", fontsize=8)
    axis.set_ylabel(label)
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=7)


def _latency(axis, scenarios: list[str], results: dict) -> None:
    servers = [s for s in SERVERS if any(s in results[name] for name in scenarios)]
    width = 0.8 / max(1, len(servers))
    for index, server in enumerate(servers):
        labelled = False
        for position, name in enumerate(scenarios):
            figure = results[name].get(server)
            if figure is None or figure.get("p50_ms") is None:
                continue
            x = position + (index - (len(servers) - 1) / 2) * width
            axis.bar(x, figure["p50_ms"], width, color=COLOURS[server], label=None if labelled else server)
            labelled = True
            # The p99 as a thin line above the p50 bar.
            axis.plot([x, x], [figure["p50_ms"], figure["p99_ms"]], color="black", linewidth=1)
            axis.plot([x - width / 3, x + width / 3], [figure["p99_ms"]] * 2, color="black", linewidth=1)
    axis.set_xticks(range(len(scenarios)), scenarios, rotation=20, ha="right", fontsize=8)
    axis.set_ylabel("latency, ms (bar p50, whisker p99)")
    axis.set_yscale("log")
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=7)


def draw(document: dict, path: Path) -> None:
    """Draw ``document`` (the JSON of a bench run) to ``path`` as a PNG."""
    results = document["results"]
    rows = [
        name for name in results if name.startswith(("Predict 1,000", "BatchPredict", "Train", "ModelInfer 10,000"))
    ]
    calls = [name for name, by in results.items() if name not in rows and any("rps" in r for r in by.values())]
    figure, (top, middle, bottom) = plt.subplots(3, 1, figsize=(11, 13))
    _grouped_bars(top, calls, results, lambda r: r.get("rps"), label="requests per second")
    top.set_title("throughput: calls")
    _grouped_bars(middle, rows, results, lambda r: r.get("rows_per_s"), label="rows per second")
    middle.set_title("throughput: rows")
    _latency(bottom, calls, results)
    bottom.set_title("latency percentiles")
    figure.suptitle("\n".join(document["header"]), fontsize=8, ha="left", x=0.02)
    figure.tight_layout(rect=(0, 0, 1, 0.95))
    figure.savefig(path, dpi=90)
    plt.close(figure)


def main() -> None:
    source, target = Path(sys.argv[1]), Path(sys.argv[2])
    draw(json.loads(source.read_text()), target)


if __name__ == "__main__":
    main()
