"""Label against view position, age and sex: the real shortcuts in the public X-ray sets.

In NIH ChestX-ray14, AP films (portable, taken at the bedside of patients too ill to stand)
are far more common among pneumonia cases than among normal ones. A network can learn "AP
film -> pneumonia" instead of looking at the lungs. These tables make that visible: for each
view (or sex, or age group) the number of images of each class, and which share of each
class it makes up.

Only bundles whose splits carry `metadata` (the `xrv:` sources) have anything to show;
`metadata_summary` returns {} for the others.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: bundle.py imports this module to fill its JSON
    from .bundle import DataBundle

# The metadata columns tabulated against the label, in the order they are shown.
TABULATED = ("view", "sex", "age", "dataset")

# Age groups (years): children, young adults, middle-aged, older, oldest.
AGE_GROUPS = ((0, 18, "0–17"), (18, 40, "18–39"), (40, 60, "40–59"), (60, 80, "60–79"), (80, 200, "80+"))
UNKNOWN = "unknown"


def age_group(age) -> str:
    """12 -> '0–17'; None, NaN or an impossible age -> 'unknown'."""
    try:
        years = float(age)
    except (TypeError, ValueError):
        return UNKNOWN
    for low, high, name in AGE_GROUPS:
        if low <= years < high:
            return name
    return UNKNOWN


def _value(column: str, raw) -> str:
    if column == "age":
        return age_group(raw)
    if raw is None or raw != raw or str(raw).strip() == "":  # raw != raw: NaN
        return UNKNOWN
    return str(raw)


def label_table(bundle: DataBundle, column: str) -> list[dict]:
    """One row per value of `column` (e.g. view 'AP', 'PA'), over all splits.

    Each row: {"value", CLASS: count ..., "share_of_CLASS": fraction of that class's images
    with this value ...}. Empty when no split has the column.
    """
    counts: dict[str, dict[str, int]] = {}
    totals = {cls: 0 for cls in bundle.classes}
    for split in bundle.splits.values():
        values = split.metadata.get(column)
        if values is None:
            continue
        for raw, label in zip(values, split.labels.tolist()):
            cls = bundle.classes[label]
            row = counts.setdefault(_value(column, raw), {c: 0 for c in bundle.classes})
            row[cls] += 1
            totals[cls] += 1
    order = [name for _, _, name in AGE_GROUPS] + [UNKNOWN] if column == "age" else sorted(counts)
    rows = []
    for value in order:
        if value not in counts:
            continue
        row = {"value": value} | counts[value]
        for cls in bundle.classes:
            row[f"share_of_{cls}"] = counts[value][cls] / totals[cls] if totals[cls] else None
        rows.append(row)
    return rows


def metadata_summary(bundle: DataBundle) -> dict:
    """{"patients": {split: n}, "view": [rows], "sex": [rows], "age": [rows], "dataset": [rows]}."""
    if not any(split.metadata for split in bundle.splits.values()):
        return {}
    summary: dict = {"patients": {name: len(set(split.metadata.get("patient", ())))
                                  for name, split in bundle.splits.items()}}
    for column in TABULATED:
        rows = label_table(bundle, column)
        if rows:
            summary[column] = rows
    return summary


def summary_lines(bundle: DataBundle) -> list[str]:
    """The readable CLI summary's part for the public sets: selection counts and label tables."""
    lines = []
    for source, selection in bundle.selection.items():
        if "csv_rows" not in selection:  # ChestMNIST: a mapping rule and what it left out
            lines += ["", f"{source}: {selection.get('rule', '')}; left out (other findings only): "
                      f"{selection.get('left_out_other_findings', {})}"]
            continue
        lines += ["", f"{source}: {selection['csv_rows']} rows in {selection['labels_csv']}",
                  f"  missing files (CSV rows without an image on disk): {selection['missing_files']}"
                  + (f", e.g. {', '.join(selection['missing_examples'][:3])}" if selection["missing_files"] else ""),
                  f"  image files not in the CSV: {selection['files_not_in_csv']}"]
        lines += [f"  on disk, {group}: {count}" for group, count in selection["groups"].items()]
    for column, rows in metadata_summary(bundle).items():
        if column == "patients":
            lines += ["", "patients per split: " + ", ".join(f"{k} {v}" for k, v in rows.items())]
            continue
        lines += ["", f"label vs {column}:"]
        for row in rows:
            parts = [f"{cls} {row[cls]} ({_percent(row[f'share_of_{cls}'])})" for cls in bundle.classes]
            lines.append(f"  {row['value']:<10} " + "   ".join(parts))
    return lines


def _percent(share: float | None) -> str:
    return "–" if share is None else f"{share:.0%}"
