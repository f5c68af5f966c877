"""Figures and their outputs: the printed table, results.json, results.md and the chart results.png."""

from __future__ import annotations

import json
import math
import textwrap
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Figure", "table", "write_chart", "write_json", "write_markdown"]


@dataclass
class Figure:
    """One measured figure next to its baseline, in the same run.

    ``ratio`` is ours / baseline. A target is either on the ratio (``ratio_max``) or on ours' own value
    (``value_max``); ``target_source`` says who set it (``brief``: the bench's brief; ``README``: a claim
    the README makes). A figure without a target has ``passed = None``.
    """

    section: str
    key: str
    name: str
    unit: str
    ours: float | None
    baseline: float | None = None
    baseline_name: str = ""
    ratio_max: float | None = None
    value_max: float | None = None
    target_source: str = ""
    note: str = ""
    samples: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.ours is None or self.baseline in (None, 0) or math.isnan(self.ours):
            return None
        assert self.baseline is not None
        return self.ours / self.baseline

    @property
    def target(self) -> str:
        if self.ratio_max is not None:
            return f"ratio <= {self.ratio_max:g}"
        if self.value_max is not None:
            return f"<= {self.value_max:g} {self.unit}".strip()
        return ""

    @property
    def passed(self) -> bool | None:
        if self.ratio_max is not None:
            return None if self.ratio is None else self.ratio <= self.ratio_max
        if self.value_max is not None:
            return None if self.ours is None or math.isnan(self.ours) else self.ours <= self.value_max
        return None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(ratio=self.ratio, target=self.target or None, passed=self.passed)
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in data.items()}


def _num(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _verdict(figure: Figure) -> str:
    return {True: "PASS", False: "FAIL", None: ""}[figure.passed]


def _rows(figures: list[Figure]) -> list[list[str]]:
    rows = []
    for f in figures:
        ratio = f"{f.ratio:.2f}x" if f.ratio is not None else "-"
        baseline = f"{_num(f.baseline)} ({f.baseline_name})" if f.baseline_name else _num(f.baseline)
        rows.append([f.name, f.unit, _num(f.ours), baseline, ratio, f.target or "-", _verdict(f)])
    return rows


HEADERS = ["figure", "unit", "ours", "baseline", "ratio", "target", ""]


def table(figures: list[Figure]) -> str:
    """A plain-text table, one block per section."""
    lines: list[str] = []
    rows = _rows(figures)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADERS)]
    section = None
    for figure, row in zip(figures, rows, strict=True):
        if figure.section != section:
            section = figure.section
            header = "  " + "  ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True))
            lines += ["", section, header.rstrip()]
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines).lstrip("\n")


def write_markdown(path: Path, figures: list[Figure], meta: dict[str, Any]) -> None:
    out = ["# agentstream bench results", ""]
    out += [f"- {k}: {v}" for k, v in meta.items() if not isinstance(v, dict | list)]
    section = None
    for figure, row in zip(figures, _rows(figures), strict=True):
        if figure.section != section:
            section = figure.section
            out += ["", f"## {section}", "", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
        out.append("| " + " | ".join(c.replace("|", "/") for c in row) + " |")
    notes = [f"- **{f.name}**: {f.note}" for f in figures if f.note]
    if notes:
        out += ["", "## Notes", "", *notes]
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


def write_json(path: Path, figures: list[Figure], meta: dict[str, Any]) -> None:
    document = {"meta": meta, "figures": [f.to_dict() for f in figures]}
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _limit(figure: Figure) -> float | None:
    """The value ours must stay under, in ours' own unit."""
    if figure.ratio_max is not None and figure.baseline is not None:
        return figure.ratio_max * figure.baseline
    return figure.value_max


def _title(text: str) -> str:
    return textwrap.fill(text.replace("$", r"\$"), 75)


def write_chart(path: Path, figures: list[Figure]) -> None:
    """Top: every target, as ours / the limit (1 = just on target). Below, one panel per section: ours
    next to its baseline, the target as a dashed mark."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [f for f in figures if f.ours is not None and not math.isnan(f.ours)]
    sections: dict[str, list[Figure]] = {}
    for figure in measured:
        sections.setdefault(figure.section, []).append(figure)
    targeted = [f for f in measured if (limit := _limit(f)) is not None and limit > 0]
    columns = 2
    rows = max(1, math.ceil(len(sections) / columns))
    fig = plt.figure(figsize=(15, 4.2 * rows + 0.35 * len(targeted) + 1.5))
    grid = fig.add_gridspec(rows + 1, columns, height_ratios=[max(2.0, 0.3 * len(targeted)), *[4.2] * rows])

    top = fig.add_subplot(grid[0, :])
    if targeted:
        shares = [max(f.ours or 0.0, 1e-3) / (_limit(f) or 1.0) for f in targeted]
        colors = ["#2a9d8f" if f.passed else "#e76f51" for f in targeted]
        top.barh(range(len(targeted)), shares, color=colors)
        top.axvline(1.0, color="k", linestyle="--", linewidth=1)
        top.set_yticks(range(len(targeted)), [f"{f.name} ({f.target})" for f in targeted], fontsize=7)
        top.invert_yaxis()
        top.set_xscale("log")
        for i, (f, share) in enumerate(zip(targeted, shares, strict=True)):
            label = f" {share:.2f} of the limit ({_num(f.ours)} {f.unit})"
            top.text(share, i, label, va="center", fontsize=7)
    top.set_title("Targets: ours / limit (left of the dashed line = met)", fontsize=9, loc="left")

    for index, (section, items) in enumerate(sections.items()):
        ax = fig.add_subplot(grid[1 + index // columns, index % columns])
        labels = [f"{f.name}\n({f.unit})" for f in items]
        ours = [f.ours or 0.0 for f in items]
        base = [f.baseline if f.baseline is not None else math.nan for f in items]
        height = 0.38
        colors = ["#2a9d8f" if f.passed in (True, None) else "#e76f51" for f in items]
        ax.barh([i - height / 2 for i in range(len(items))], ours, height, color=colors, label="ours")
        ax.barh([i + height / 2 for i in range(len(items))], base, height, color="#8d99ae", label="baseline")
        for i, f in enumerate(items):
            limit = _limit(f)
            if limit is not None:
                ax.plot([limit, limit], [i - 0.45, i + 0.45], "k--", linewidth=1)
            text = f"{_num(f.ours)} ({f.ratio:.2f}x)" if f.ratio is not None else _num(f.ours)
            ax.text(max(ours[i], 0), i - height / 2, " " + text, va="center", fontsize=7)
        ax.set_yticks(range(len(items)), labels, fontsize=7)
        ax.invert_yaxis()
        positive = [v for v in [*ours, *base] if v and not math.isnan(v) and v > 0]
        if positive and max(positive) / min(positive) > 50:
            ax.set_xscale("log")
        ax.set_title(_title(section), fontsize=8, loc="left")
        ax.tick_params(axis="x", labelsize=7)
        if index == 0:
            ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("agentstream bench: ours (green = on target or no target, red = over) vs baseline (grey)")
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=100)
    plt.close(fig)
