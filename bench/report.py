"""A benchmark run's record: the printed tables, their raw values, the JSON kept per mode,
and BENCHMARKS.md rendered from those JSONs (a CPU and a GPU column)."""

import dataclasses
import json
import os
import statistics
from typing import Any, Optional, Sequence

from bench import growth
from bench import harness

MODES = {"cpu": "CPU", "device": "GPU"}
_RAW_FORMAT = "{:.6g}"


@dataclasses.dataclass
class Report:
  """One run of `python -m bench`.

  Attributes:
    mode: profile name (`cpu`, `device`, `tiny`).
    command: how it was run.
    started_at: ISO time.
    wall_s: wall time of the whole run.
    machine: `harness.machine_info()`, plus the load average at the end.
    versions: library versions.
    figures: the figures, in order.
    curves: the cost curves (figure 7), in order.
    failures: figure number -> the error's line, for each figure that failed.
  """
  mode: str
  command: str
  started_at: str
  wall_s: float
  machine: dict[str, Any]
  versions: dict[str, str]
  figures: list[harness.Figure]
  curves: list[growth.Curve] = dataclasses.field(default_factory=list)
  failures: dict[str, str] = dataclasses.field(default_factory=dict)

  def to_dict(self) -> dict[str, Any]:
    return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in ("figures", "curves")},
            "figures": [figure.to_dict() for figure in self.figures],
            "curves": [curve.to_dict() for curve in self.curves]}

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "Report":
    return cls(**{**d, "figures": [harness.Figure.from_dict(f) for f in d["figures"]],
                  "curves": [growth.Curve.from_dict(c) for c in d.get("curves", [])]})


def merge(reports: list[Report]) -> Report:
  """One report from the parts of a run made in several sittings (`--part`): their figures,
  curves and failures in figure order, their commands, the sum of their wall times, and the
  first part's machine and versions."""
  first = reports[0]
  return Report(
      mode=first.mode, command="; ".join(r.command for r in reports),
      started_at=first.started_at, wall_s=sum(r.wall_s for r in reports),
      machine=first.machine, versions=first.versions,
      figures=sorted((f for r in reports for f in r.figures),
                     key=lambda f: _figure_order(f.key)),
      curves=sorted((c for r in reports for c in r.curves), key=lambda c: _figure_order(c.key)),
      failures={k: v for r in reports for k, v in r.failures.items()})


def save_json(report: Report, path: str) -> None:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w") as f:
    json.dump(report.to_dict(), f, indent=1, ensure_ascii=False)
    f.write("\n")


def load_json(path: str) -> Optional[Report]:
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return Report.from_dict(json.load(f))


def _ratio_cell(figure: harness.Figure) -> str:
  low, high = figure.ratio_range
  return f"{figure.ratio:.3g} ({low:.3g}–{high:.3g})"


def _met_cell(item) -> str:
  if not item.goal:
    return "reported"
  return "yes" if item.met else "**no**"


def _goal_cell(goal: str) -> str:
  return f"`{goal}`" if goal else "none"


def _align(rows: list[tuple[str, ...]]) -> str:
  widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
  lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
  lines.insert(1, "  ".join("-" * w for w in widths))
  return "\n".join(lines)


def format_table(figures: list[harness.Figure]) -> str:
  """The summary table, as aligned text."""
  rows = [("#", "figure", "measured", "baseline", "ratio (range)", "goal", "met")]
  for f in figures:
    rows.append((f.key, f.title, f.measured.summary(), f.baseline.summary(), _ratio_cell(f),
                 f.goal or "-", ("yes" if f.met else "NO") if f.goal else "reported"))
  return _align(rows)


def _exponents_cell(curve: growth.Curve) -> str:
  return f"{curve.time_exponent:.2f} / {curve.memory_exponent:.2f}"


def _medians(curve: growth.Curve) -> str:
  """'1,000: 0.52 s, 12 MiB; 4,000: ...'."""
  return "; ".join(f"{size:,}: {harness.format_value(statistics.median(s))} s, "
                   f"{harness.format_value(statistics.median(m))} MiB"
                   for size, s, m in zip(curve.sizes, curve.seconds, curve.peak_mib))


def format_curves_table(curves: list[growth.Curve]) -> str:
  """The cost curves, as aligned text: medians per size and the fitted exponents."""
  rows = [("#", "cost curve", "median per size: time, peak memory",
           "exponent: time / memory", "goal (time)", "met")]
  for c in curves:
    rows.append((c.key, c.title, _medians(c), _exponents_cell(c), c.goal or "-",
                 ("yes" if c.met else "NO") if c.goal else "reported"))
  return _align(rows)


def format_curves_raw(curves: list[growth.Curve]) -> str:
  """Every raw value of the curves and how each exponent is fitted."""
  lines = []
  for c in curves:
    lines.append(f"[{c.key}] {c.title}")
    for size, seconds, peaks in zip(c.sizes, c.seconds, c.peak_mib):
      lines.append(f"  {c.size_label} {size:,}: seconds "
                   f"{' '.join(_RAW_FORMAT.format(v) for v in seconds)} | peak MiB "
                   f"{' '.join(_RAW_FORMAT.format(v) for v in peaks)}")
    lines.append(f"  exponent = least-squares slope of log(median) on log({c.size_label}): "
                 f"time {c.time_exponent:.4g}, memory {c.memory_exponent:.4g}"
                 + (f"; goal (time) {c.goal}: {'met' if c.met else 'MISSED'}" if c.goal
                    else ""))
    if c.setup:
      lines.append(f"  setup: {c.setup}")
  return "\n".join(lines)


def format_raw(figures: list[harness.Figure]) -> str:
  """Every raw value and how each ratio is computed from them."""
  lines = []
  for f in figures:
    numerator, denominator = (("baseline", "measured")
                              if f.ratio_of == harness.BASELINE_OVER_MEASURED
                              else ("measured", "baseline"))
    parts = {"measured": f.measured, "baseline": f.baseline}
    lines.append(f"[{f.key}] {f.title}")
    for role, m in parts.items():
      raw = " ".join(_RAW_FORMAT.format(v) for v in m.values)
      lines.append(f"  {role} ({m.unit}): {raw}  | {m.label}")
    if f.paired:
      ratios = " ".join(_RAW_FORMAT.format(r) for r in f.repetition_ratios)
      lines.append(f"  ratio = median of {numerator}_i / {denominator}_i = median({ratios}) "
                   f"= {f.ratio:.3g}; range = min..max of those")
    else:
      lines.append(f"  ratio = median({numerator}) / median({denominator}) = "
                   f"{_RAW_FORMAT.format(parts[numerator].median)} / "
                   f"{_RAW_FORMAT.format(parts[denominator].median)} = {f.ratio:.3g}; "
                   f"range = {_RAW_FORMAT.format(parts[numerator].low)} / "
                   f"{_RAW_FORMAT.format(parts[denominator].high)} .. "
                   f"{_RAW_FORMAT.format(parts[numerator].high)} / "
                   f"{_RAW_FORMAT.format(parts[denominator].low)}")
    lines.append(f"  goal {f.goal}: {'met' if harness.meets(f.ratio, f.goal) else 'MISSED'}"
                 if f.goal else "  no goal: reported")
    for m in f.extra:
      raw = " ".join(_RAW_FORMAT.format(v) for v in m.values)
      lines.append(f"  also ({m.unit}): {raw}  | {m.label}")
    for check in f.checks:
      lines.append(f"  check: {check.label} = {check.value:.3g}, goal {check.goal}: "
                   f"{'met' if check.met else 'MISSED'}")
    if f.setup:
      lines.append(f"  setup: {f.setup}")
  return "\n".join(lines)


def format_header(report: Report) -> str:
  m = report.machine
  gpus = ", ".join(m.get("gpus") or []) or "none"
  load = "/".join(f"{v:.1f}" for v in m.get("load_average_at_start", []))
  load_end = "/".join(f"{v:.1f}" for v in m.get("load_average_at_end", []))
  versions = ", ".join(f"{k} {v}" for k, v in report.versions.items())
  device = gpus if m.get("gpus") else f"{m['cpu']} ({m['usable_cores']} cores)"
  return (f"Mode {report.mode}, on {device}: `{report.command}`, started {report.started_at}, "
          f"wall {report.wall_s:.0f} s\n"
          f"Machine: {m['cpu']}, {m['usable_cores']} usable of {m['logical_cores']} logical "
          f"cores, {m['memory_gib']} GiB; GPUs: {gpus}; load average (1/5/15 min) at start "
          f"{load}, at end {load_end}\nVersions: {versions}")


def format_text(report: Report) -> str:
  parts = [format_header(report)]
  if report.figures:
    parts.append(format_table(report.figures))
  if report.curves:
    parts.append(format_curves_table(report.curves))
  parts.extend(format_failures(report))
  parts.append("Raw values, one per repetition in the order taken:")
  if report.figures:
    parts.append(format_raw(report.figures))
  if report.curves:
    parts.append(format_curves_raw(report.curves))
  return "\n\n".join(parts)


def format_failures(report: Report) -> list[str]:
  """One line per failed figure (none: an empty list)."""
  return [f"Figure {key} FAILED: {error}" for key, error in sorted(
      report.failures.items(), key=lambda item: _figure_order(item[0]))]


def render_markdown(reports: dict[str, Optional[Report]], notes: Sequence[str] = ()) -> str:
  """BENCHMARKS.md: a summary with one column per mode, then `notes` (Markdown sections of
  measurements made apart from a full run, `read_notes`), then each run in full."""
  keys, titles, baselines, goals = [], {}, {}, {}
  for report in reports.values():
    for f in report.figures if report else []:
      if f.key not in titles:
        keys.append(f.key)
      titles[f.key], baselines[f.key], goals[f.key] = f.title, f.baseline.label, f.goal
  by_mode = {mode: {f.key: f for f in r.figures} if r else {} for mode, r in reports.items()}
  out = ["# Benchmarks", "",
         "Made by `python -m bench` (CPU column) and `python -m bench --device` (GPU column); "
         "see [bench/README.md](bench/README.md). Every figure is a ratio of two "
         "measurements taken in the same run, alternately, repeated: the median of the "
         "per-repetition ratios, with their min–max in brackets (figure 2, whose slow "
         "scikit-learn side runs once on CPU: the ratio of the medians, with the ratios of "
         "the extremes). The raw values are listed under each run, so each ratio can be "
         "recomputed. Figure 1a (one light backbone extracting alone) may stay below its goal "
         "on 2 CPU cores, where decoding shares the cores with the forward pass; a sweep "
         "decodes once for all its backbones of one resolution, which figure 6 measures "
         "(see [Reading the numbers](bench/README.md#reading-the-numbers)). Figure 10 runs a "
         "whole mini-study (`python -m bench --part=study`); its wall time by phase, what the "
         "phases cost against their compute and what was removed are in [Figure 10: a study, "
         "start to report](bench/README.md#figure-10-a-study-start-to-report).", ""]
  header = ["#", "Figure", "Baseline (same run)", "Goal"]
  for mode in reports:
    header += [f"{MODES.get(mode, mode)}: ratio (range)", "met"]
  out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for key in sorted(keys, key=_figure_order):
    row = [key, titles[key], baselines[key], _goal_cell(goals[key])]
    for mode in reports:
      f = by_mode[mode].get(key)
      row += [_ratio_cell(f), _met_cell(f)] if f else ["not run", ""]
    out.append("| " + " | ".join(row) + " |")
  out += _curves_summary(reports)
  for note in notes:
    out += ["", note.strip()]
  for mode, report in reports.items():
    out += ["", f"## {MODES.get(mode, mode)} run", ""]
    if report is None:
      out.append(f"Not run: no {MODES.get(mode, mode)} was lent to the session that wrote "
                 f"this file. Run `python -m bench --device` on a machine with one GPU "
                 f"(a few minutes) to fill this column.")
      continue
    out += [format_header(report).replace("\n", "  \n"), ""]
    out += [f"{line}  " for line in format_failures(report)] + (
        [""] if report.failures else [])
    out += [
            "| # | Measured: median (min–max) | Baseline: median (min–max) | Ratio | Met |",
            "|---|---|---|---|---|"]
    for f in report.figures:
      out.append(f"| {f.key} | {f.measured.label}: {f.measured.summary()} | "
                 f"{f.baseline.label}: {f.baseline.summary()} | {_ratio_cell(f)} | "
                 f"{_met_cell(f)} |")
    if report.curves:
      out += ["", "| # | Cost curve | Median per size: time, peak memory | Exponent: time / "
              "memory | Met |", "|---|---|---|---|---|"]
      for c in report.curves:
        out.append(f"| {c.key} | {c.title} | {_medians(c)} | {_exponents_cell(c)} | "
                   f"{_met_cell(c)} |")
    out += ["", "Raw values, one per repetition in the order taken, and each ratio:", "",
            "```", format_raw(report.figures)]
    if report.curves:
      out.append(format_curves_raw(report.curves))
    out.append("```")
  return "\n".join(out) + "\n"


def read_notes(results_dir: str) -> list[str]:
  """The Markdown files of `results_dir` (bench/results/*.md), in name order: sections kept
  in BENCHMARKS.md across full runs, each saying how and when it was measured."""
  notes = []
  for name in sorted(os.listdir(results_dir)) if os.path.isdir(results_dir) else []:
    if name.endswith(".md"):
      with open(os.path.join(results_dir, name)) as f:
        notes.append(f.read())
  return notes


def _curves_summary(reports: dict[str, Optional[Report]]) -> list[str]:
  """The cost curves' table: per mode, the fitted time / memory exponents."""
  keys, titles, goals = [], {}, {}
  for report in reports.values():
    for c in report.curves if report else []:
      if c.key not in titles:
        keys.append(c.key)
      titles[c.key], goals[c.key] = f"{c.title} ({', '.join(f'{s:,}' for s in c.sizes)})", c.goal
  if not keys:
    return []
  by_mode = {mode: {c.key: c for c in r.curves} if r else {} for mode, r in reports.items()}
  header = ["#", "Cost curve (sizes)", "Goal (time exponent)"]
  for mode in reports:
    header += [f"{MODES.get(mode, mode)}: exponent, time / memory", "met"]
  out = ["", "Figure 7, cost curves: each phase's time and peak memory at three sizes, and the "
         "exponent of size that fits them (1: linear, 0: flat).", "",
         "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for key in keys:
    row = [key, titles[key], _goal_cell(goals[key])]
    for mode in reports:
      c = by_mode[mode].get(key)
      row += [_exponents_cell(c), _met_cell(c)] if c else ["not run", ""]
    out.append("| " + " | ".join(row) + " |")
  return out


def _figure_order(key: str):
  return (int("".join(c for c in key if c.isdigit()) or 0), key)
