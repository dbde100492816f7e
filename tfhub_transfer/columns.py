"""Plain-text tables for the terminal: one column aligner for every listing."""

from typing import Sequence


def align(rows: Sequence[Sequence[str]], *, rule: bool = False) -> str:
  """Left-aligns the columns of `rows` (the first row is the header), two spaces apart.

  Args:
    rows: cells as strings; every row has the same number of cells.
    rule: put a line of dashes under the header.

  Returns:
    The table, one line per row, without trailing spaces.
  """
  widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
  lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
  if rule:
    lines.insert(1, "  ".join("-" * w for w in widths))
  return "\n".join(lines)
