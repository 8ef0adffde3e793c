"""Import TensorBoard event files with TensorBoard's own ``EventAccumulator``.

Each directory holding ``events.out.tfevents.*`` files is one run (as TensorBoard shows it). Scalar
summaries (``add_scalar`` of ``torch.utils.tensorboard``, ``tf.summary.scalar`` written as
tensors) become rows on a ``step`` loop; images, histograms, text and hparams are not imported.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from .common import ImportedRun, ImportResult, cell, need, stable_run_id, write_runs

_SCAN_LIMIT = 100_000


def run_dirs(root: Path) -> list[Path]:
    """The directories under ``root`` (itself included) holding event files."""
    if root.is_file():
        return [root.parent]
    found = {p.parent for p in itertools.islice(root.rglob("*tfevents*"), _SCAN_LIMIT)}
    return sorted(found)


def import_tensorboard(store: Any, root: Path) -> ImportResult:
    """Store one run per event-file directory under ``root``."""
    need("tensorboard", "TensorBoard")
    from tensorboard.backend.event_processing import event_accumulator as ea

    result = ImportResult(source=str(root))
    base = root if root.is_dir() else root.parent
    runs = []
    for directory in run_dirs(root):
        acc = ea.EventAccumulator(str(directory), size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
        acc.Reload()
        points = _scalars(acc, ea)
        if not points:
            result.notes.append(f"{directory}: no scalar summaries, not imported")
            continue
        relative = directory.relative_to(base).as_posix() if directory != base else "."
        start = min(p[1] for p in points)
        run = ImportedRun(run_id=stable_run_id(start, f"tensorboard:{directory.resolve()}"))
        run.facts = {
            "script": f"tensorboard:{relative}",
            "cwd": str(directory),
            "start_time": start,
        }
        run.end_time = max(p[1] for p in points)
        steps: dict[int, int] = {}
        for seq, (step, wall, tag, value) in enumerate(sorted(points), start=1):
            if step not in steps:
                steps[step] = len(steps) + 1
                run.loops.append((steps[step], 0, 1, "step", step, json.dumps(step), wall))
            encoded = cell(value)
            if encoded is not None:
                run.logs.append((seq, steps[step], tag, *encoded, None))
        run.tags = {"imported_from": "tensorboard", "source_dir": relative}
        runs.append(run)
    write_runs(store, runs, result)
    return result


def _scalars(acc: Any, ea: Any) -> list[tuple[int, float, str, float]]:
    """``(step, wall_time, tag, value)`` of every scalar, old-style and tensor-style."""
    tags = acc.Tags()
    points = [
        (int(e.step), float(e.wall_time), tag, float(e.value))
        for tag in tags.get(ea.SCALARS, [])
        for e in acc.Scalars(tag)
    ]
    if tags.get(ea.TENSORS):
        from tensorboard.util import tensor_util

        for tag in tags[ea.TENSORS]:
            plugin = acc.SummaryMetadata(tag).plugin_data.plugin_name
            if plugin != "scalars":
                continue
            for e in acc.Tensors(tag):
                array = tensor_util.make_ndarray(e.tensor_proto)
                if array.size == 1:
                    points.append((int(e.step), float(e.wall_time), tag, float(array.item())))
    return points
