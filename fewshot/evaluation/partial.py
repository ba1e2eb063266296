"""An unfinished evaluation's scores, saved chunk by chunk, so a killed evaluation resumes.

Scoring a slow method (``scratch`` or full fine-tuning: 100 epochs per episode) on 600
episodes takes hours on a CPU; a process killed at 90% should not have to start again.
While :func:`~fewshot.evaluation.compare` runs, every process saves the chunks of episodes
it has scored to ``<out>/partial/rank<r>.pt`` (atomically, after a chunk once
:data:`SAVE_EVERY_S` seconds have passed since the last save, so that fast methods are not
slowed by writes), with the wall time spent on each method and setting.
``python -m fewshot.evaluate resume=<out>`` loads the chunks of every process's file and
scores only the missing ones; they are the chunks it would score, because the configuration
is the same (:func:`fewshot.config.resume_eval_config`) and episode ``i`` is a pure function
of the seed and ``i``. The folder is removed once the report is written.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch

from fewshot.io import atomic_write

FOLDER = "partial"
SAVE_EVERY_S = 5.0  # at most this much scoring is lost when a process is killed


class PartialScores:
    """Chunks of episodes already scored, ``chunks(setting, label) -> {chunk index: metrics}``,
    and the record of this process's own (``record``), kept in ``<out>/partial/rank<rank>.pt``.

    The state loaded is the union of every process's file (the last run may have had another
    number of processes), so this process's file, rewritten whole, loses nothing.
    """

    def __init__(self, out_dir: str | Path, rank: int = 0) -> None:
        self.folder = Path(out_dir) / FOLDER
        self.path = self.folder / f"rank{rank}.pt"
        self.state: dict[str, dict[str, dict]] = {}  # setting -> label -> {"chunks": {...}, "seconds": s}
        self.saved_at = time.monotonic()
        for file in sorted(self.folder.glob("rank*.pt")):
            try:
                loaded = torch.load(file, weights_only=True)
            except Exception as err:
                raise ValueError(
                    f"cannot read {file} ({type(err).__name__}); remove it, and the chunks it held "
                    "are scored again"
                ) from None
            for key, by_label in loaded.items():
                for label, entry in by_label.items():
                    mine = self.state.setdefault(key, {}).setdefault(label, {"chunks": {}, "seconds": 0.0})
                    mine["chunks"].update(entry["chunks"])
                    mine["seconds"] = max(mine["seconds"], entry["seconds"])

    def chunks(self, key: str, label: str) -> dict[int, dict[str, torch.Tensor]]:
        """The chunks of ``label`` in setting ``key`` scored before, by index."""
        return dict(self.state.get(key, {}).get(label, {}).get("chunks", {}))

    def seconds(self, key: str, label: str) -> float:
        """Wall time already spent on ``label`` in setting ``key`` (the longest of any process)."""
        return self.state.get(key, {}).get(label, {}).get("seconds", 0.0)

    def record(
        self, key: str, label: str, chunk: int, metrics: dict[str, torch.Tensor], seconds: float
    ) -> None:
        """Add a scored chunk and the wall time spent so far; save this process's file if
        :data:`SAVE_EVERY_S` seconds have passed since the last save."""
        entry = self.state.setdefault(key, {}).setdefault(label, {"chunks": {}, "seconds": 0.0})
        entry["chunks"][chunk] = metrics
        entry["seconds"] = seconds
        if time.monotonic() - self.saved_at >= SAVE_EVERY_S:
            atomic_write(self.path, lambda f: torch.save(self.state, f))
            self.saved_at = time.monotonic()

    def remove(self) -> None:
        """Delete the folder (the evaluation is complete and its ``scores.pt`` holds it all)."""
        shutil.rmtree(self.folder, ignore_errors=True)
