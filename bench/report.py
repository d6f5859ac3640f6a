"""Results of one run: rows of measurements, targets with PASS/FAIL, JSON and a chart."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import subprocess
from typing import Any

from bench.load import Load


@dataclasses.dataclass
class Row:
    section: str
    name: str
    load: Load | None = None
    #: Extra figures shown in the note column, e.g. "12.1 KiB/stream".
    note: str = ""
    values: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Target:
    name: str
    value: float | None
    limit: float
    #: ">=" (value must be at least limit) or "<=".
    op: str
    unit: str = ""
    detail: str = ""

    @property
    def status(self) -> str:
        if self.value is None or math.isnan(self.value):
            return "n/a"
        ok = self.value >= self.limit if self.op == ">=" else self.value <= self.limit
        return "PASS" if ok else "FAIL"

    def shown(self, number: float | None) -> str:
        if number is None or math.isnan(number):
            return "-"
        if self.unit == "%":
            return f"{number * 100:.0f}%"
        if self.unit == "x":
            return f"{number:.2f}x"
        return f"{number:.1f} {self.unit}".strip()


@dataclasses.dataclass
class Results:
    rows: list[Row] = dataclasses.field(default_factory=list)
    targets: list[Target] = dataclasses.field(default_factory=list)
    #: Things not measured, and why.
    missing: list[str] = dataclasses.field(default_factory=list)
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)

    def add(self, section: str, name: str, load: Load | None = None, **kwargs: Any) -> Row:
        row = Row(section, name, load, **kwargs)
        self.rows.append(row)
        return row

    def target(self, *args: Any, **kwargs: Any) -> Target:
        target = Target(*args, **kwargs)
        self.targets.append(target)
        return target

    def table(self) -> str:
        """The results as a Markdown table (readable as plain text too)."""
        lines = [
            "| scenario | server | req/s | p50 ms | p99 ms | errors | CPU us/req "
            "| switches/req | note |",
            "|---|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for row in self.rows:
            load = row.load
            if load is None:
                figures = ["", "", "", "", "", ""]
            else:
                figures = [
                    f"{load.rps:,.0f}",
                    f"{load.p50_ms:.1f}",
                    f"{load.p99_ms:.1f}",
                    str(load.errors),
                    "" if math.isnan(load.cpu_us) else f"{load.cpu_us:.0f}",
                    "" if math.isnan(load.switches) else f"{load.switches:.1f}",
                ]
            lines.append(f"| {row.section} | {row.name} | {' | '.join(figures)} | {row.note} |")
        lines += ["", "| target | measured | limit | result |", "|---|---:|---:|---|"]
        for target in self.targets:
            limit = f"{target.op} {target.shown(target.limit)}"
            name = f"{target.name} ({target.detail})" if target.detail else target.name
            lines.append(f"| {name} | {target.shown(target.value)} | {limit} | {target.status} |")
        if self.missing:
            lines += ["", "Not measured:", *(f"- {text}" for text in self.missing)]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "machine": machine(),
            "settings": self.settings,
            "rows": [
                {
                    "section": r.section,
                    "name": r.name,
                    **(dataclasses.asdict(r.load) if r.load else {}),
                    "note": r.note,
                    **r.values,
                }
                for r in self.rows
            ],
            "targets": [{**dataclasses.asdict(t), "status": t.status} for t in self.targets],
            "missing": self.missing,
        }

    def chart(self, path: str) -> None:
        """One horizontal bar per target: measured value against its limit."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        shown = [t for t in self.targets if t.status != "n/a"]
        if not shown:
            return
        # The mixed load's shares: one process, each fairness variant, then the other
        # deployments of the split scenario on the same core.
        mixed = {f"one process, {k}": v for k, v in self.settings.get("mixed", {}).items()}
        for name, shares in self.settings.get("split", {}).items():
            if name != "one process":  # the same as "one process, fairness on"
                mixed[name] = shares
        height = 0.42 * len(shown) + 1.2
        if mixed:
            lower = 0.55 * len(mixed) + 1.1
            fig, (ax, ax2) = plt.subplots(
                2,
                1,
                figsize=(8, height + lower + 0.2),
                dpi=80,
                gridspec_kw={"height_ratios": [height, lower]},
            )
        else:
            fig, ax = plt.subplots(figsize=(8, height), dpi=80)
        names, scores, colors = [], [], []
        for target in reversed(shown):
            # Everything as "share of its limit that is met": 1.0 is the line to cross.
            assert target.value is not None
            if target.op == ">=":
                score = target.value / target.limit
            else:
                score = target.limit / target.value if target.value else 2.0
            names.append(
                f"{target.name}\n{target.shown(target.value)} vs {target.op} "
                f"{target.shown(target.limit)}"
            )
            scores.append(min(score, 2.0))
            colors.append("#3a7d44" if target.status == "PASS" else "#c0392b")
        ax.barh(names, scores, color=colors)
        ax.axvline(1.0, color="black", linewidth=1)
        ax.set_xlim(0, 2.0)
        ax.set_xlabel("measured / target (right of the line: target met; capped at 2)")
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title("hybridserver benchmark targets", fontsize=10)
        if mixed:
            labels = list(mixed)
            for offset, (key, label, color) in enumerate(
                (("grpc_share", "gRPC", "#2e86c1"), ("http_share", "HTTP", "#e67e22"))
            ):
                values = [mixed[name][key] * 100 for name in labels]
                positions = [i + (offset - 0.5) * 0.38 for i in range(len(labels))]
                bars = ax2.barh(positions, values, height=0.36, color=color, label=label)
                ax2.bar_label(bars, fmt="%.0f%%", fontsize=7, padding=2)
            ax2.set_yticks(range(len(labels)), labels, fontsize=8)
            ax2.axvline(40, color="black", linewidth=1, linestyle="--")
            ax2.set_xlim(0, 100)
            ax2.set_xlabel("throughput under mixed load, % of the same protocol alone", fontsize=8)
            ax2.legend(fontsize=7, loc="lower right")
            ax2.set_title("HTTP and gRPC loaded together on one core", fontsize=9)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {"nproc": os.cpu_count(), "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    for module in ("grpc", "uvloop", "uvicorn", "django", "asgiref"):
        try:
            info[module] = __import__(module).__version__
        except Exception:
            info[module] = None
    for tool, args in (("wrk", ["wrk", "-v"]), ("h2load", ["h2load", "--version"])):
        try:
            done = subprocess.run(args, capture_output=True, text=True)
            info[tool] = (done.stdout or done.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            info[tool] = None
    info["kernel"] = platform.release()
    return info


def write(results: Results, directory: str, stamp: str) -> tuple[str, str]:
    """Write ``results-<stamp>.json`` and ``chart-<stamp>.png``; return their paths."""
    os.makedirs(directory, exist_ok=True)
    json_path = os.path.join(directory, f"results-{stamp}.json")
    with open(json_path, "w") as out:
        json.dump(results.to_json(), out, indent=2)
    png_path = os.path.join(directory, f"chart-{stamp}.png")
    results.chart(png_path)
    return json_path, png_path
