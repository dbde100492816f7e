"""How stored records become the report's rows: readable names, superseded results, protocol
variants, unconverged fits.

A record's key names its model and dataset by content (`tfhub_transfer.identity`); the report
shows their labels (`best.h5`, `folder:data/birds`), with a short hash appended where two
different identities would otherwise look the same (`for_display`). A record whose weights
file or image folder has changed since (a newer record of the same sources, regime, seed and
protocol, under another identity) is superseded: it leaves the tables and is listed apart.
"""

import hashlib
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

from tfhub_transfer import config as config_lib

_Row = dict[str, Any]


class Display(NamedTuple):
  """The report's rows: `current` (for every table) and `superseded` (listed apart), each a
  record's JSON form with `model` and `dataset` as display labels (`model_id`, `dataset_id`
  keep the identities); `scores` the score rows, labelled alike."""
  current: list[_Row]
  superseded: list[_Row]
  scores: list[_Row]


def _short(identity: str) -> str:
  return hashlib.sha256(identity.encode()).hexdigest()[:8]


def _labels(rows: Iterable[Mapping[str, Any]], field: str) -> dict[str, str]:
  """identity -> display label, unique: a label two identities share gets `#<hash>`."""
  label_of: dict[str, str] = {}
  for row in rows:
    label_of.setdefault(row[field], row.get(f"{field}_label") or row[field])
  users: dict[str, set[str]] = {}
  for identity, label in label_of.items():
    users.setdefault(label, set()).add(identity)
  return {identity: label if len(users[label]) == 1 else f"{label}#{_short(identity)}"
          for identity, label in label_of.items()}


def _source_group(row: Mapping[str, Any]) -> tuple:
  sources = row.get("sources") or {}
  return (sources.get("model", row["model"]), sources.get("dataset", row["dataset"]),
          row["regime"], row["seed"], row.get("protocol", ""))


def for_display(records: Sequence[Mapping[str, Any]],
                scores: Sequence[Mapping[str, Any]] = ()) -> Display:
  """Labels records and score rows for display and sets superseded records apart.

  Args:
    records: result records (`ResultRecord`s or their JSON forms).
    scores: score rows (`ScoreRecord`s or their JSON forms).
  """
  rows = [dict(r) for r in records]
  score_rows = [dict(s) for s in scores]
  latest: dict[tuple, Mapping[str, Any]] = {}
  for row in rows:
    group = _source_group(row)
    if group not in latest or (row.get("created_at") or "") > (
        latest[group].get("created_at") or ""):
      latest[group] = row
  stale = [(row["model"], row["dataset"]) != (latest[_source_group(row)]["model"],
                                              latest[_source_group(row)]["dataset"])
           for row in rows]
  shown = [row for row, old in zip(rows, stale) if not old] + score_rows
  models, datasets = _labels(shown, "model"), _labels(shown, "dataset")
  # A superseded row's identity is in no table: its label, with a hash where a current row
  # shows the same label.
  for row, old in zip(rows, stale):
    for names, field in ((models, "model"), (datasets, "dataset")):
      if old and row[field] not in names:
        label = row.get(f"{field}_label") or row[field]
        names[row[field]] = (f"{label}#{_short(row[field])}" if label in names.values()
                             else label)
  current, superseded = [], []
  for row, old in zip(rows, stale):
    labelled = {**row, "model_id": row["model"], "dataset_id": row["dataset"],
                "model": models[row["model"]], "dataset": datasets[row["dataset"]]}
    (superseded if old else current).append(labelled)
  labelled_scores = [{**s, "model_id": s["model"], "dataset_id": s["dataset"],
                      "model": models[s["model"]], "dataset": datasets[s["dataset"]]}
                     for s in score_rows]
  return Display(current, superseded, labelled_scores)


def superseded_lines(superseded: Sequence[Mapping[str, Any]]) -> list[str]:
  """The report's list of results whose weights file or image folder has changed since."""
  if not superseded:
    return []
  lines = [f"{len(superseded)} stored result(s) were measured on a weights file or image "
           f"folder that has changed since (a newer result of the same path, regime, seed "
           f"and protocol exists); they are not in the tables:", ""]
  for r in superseded[:20]:
    metric = (f"test {100 * r['test_metric']:.2f}%" if r.get("test_metric") is not None
              else r["status"])
    lines.append(f"- {r['model']} / {r['dataset']} / {r['regime']} / seed {r['seed']}: "
                 f"{metric}, stored {r.get('created_at') or 'at an unknown time'}")
  if len(superseded) > 20:
    lines.append(f"- ... and {len(superseded) - 20} more.")
  return lines


def label_protocol_variants(loaded: list[Mapping[str, Any]]) -> list[_Row]:
  """Renames models measured under several protocols, so no table mixes protocols.

  Where one (regime, model) has records under more than one protocol (say a step-budget
  study), each record's model becomes `model [k=v, ...]`, listing the protocol settings that
  differ between them; everything else is returned unchanged.
  """
  groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
  for r in loaded:
    groups.setdefault((r["regime"], r["model"]), []).append(r)
  out = []
  for group in groups.values():
    defaults = config_lib.unkeyed_defaults()
    settings = {r.get("protocol", ""): {**defaults, **(r.get("protocol_settings") or {})}
                for r in group}
    if len(settings) < 2:
      out += [dict(r) for r in group]
      continue
    names = sorted({k for s in settings.values() for k in s})
    differing = [k for k in names if len({repr(s.get(k)) for s in settings.values()}) > 1]
    for r in group:
      s = settings[r.get("protocol", "")]
      suffix = (", ".join(f"{k}={s.get(k)}" for k in differing) if differing
                else f"protocol {r.get('protocol') or 'unrecorded'}")
      out.append({**r, "model": f"{r['model']} [{suffix}]"})
  return out


def unconverged(loaded: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
  """The ok records whose solver did not converge at a fit the result rests on (their
  `convergence` field: fit name -> {"converged", "iterations", "max_abs_grad"})."""
  return [r for r in loaded if r["status"] == "ok" and any(
      isinstance(fit, dict) and not fit.get("converged", True)
      for fit in (r.get("convergence") or {}).values())]
