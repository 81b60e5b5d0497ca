"""A run's row logs: the same rows as CSV and as JSON lines, written in batches.

    metrics.csv + metrics.jsonl     one row per epoch        (MetricsLogger)
    layers.csv  + layers.jsonl      one row per layer per epoch (LayerDiagnostics)

Why batches: a run of thousands of tiny epochs (XOR: 500 epochs in 0.15 s)
spent more time formatting and appending its four log rows an epoch than
training. A row now waits in memory and is written when

    - the last write is at least `max_wait` seconds old (checked as each row
      comes and as each batch ends), so an epoch of a quarter second or more
      is on disk as it ends, and a fast run writes about four times a second;
    - a `last` checkpoint is about to be saved: RunDir.sync_logs writes the
      waiting rows, then syncs the files, so a checkpoint of epoch N never
      vouches for a row that is not on disk;
    - the run ends, however it ends (train_run's `finally`).

Nothing is lost by waiting: a killed run resumes from its last checkpoint,
whose rows are on disk, and writes the later epochs' rows again.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

from bpcli.fileio import append_text, read_log_rows, write_file

MAX_WAIT = 0.25   # seconds a row may wait for the next write (a live `tail -f` or `bpcli plot` sees it then)


class RowLog:
    """A CSV file and a JSON-lines file of the same rows; rows wait in `waiting` until written."""

    def __init__(self, csv_path: Path, jsonl_path: Path, columns: list[str], key: tuple[str, ...] = ("epoch",),
                 max_wait: float = MAX_WAIT):
        self.csv_path, self.jsonl_path, self.columns, self.key = csv_path, jsonl_path, columns, key
        self.max_wait = max_wait
        self.waiting: list[dict] = []
        self.written_at = -float("inf")

    def start(self, epochs_done: int) -> list[dict]:
        """Rewrite both files with the rows of the epochs a resumed run has done (none for a new run).

        Rows of later epochs (written after the checkpoint the run resumes from)
        are dropped: the resumed run writes them again, with the same values;
        a row repeated (same `key`) is kept once, its last copy. Returns the rows kept.
        """
        rows = read_log_rows(self.jsonl_path) if epochs_done else []
        by_key = {tuple(r.get(k) for k in self.key): r for r in rows if 1 <= r["epoch"] <= epochs_done}
        kept = sorted(by_key.values(), key=lambda r: r["epoch"])
        write_file(self.csv_path, csv_rows(kept, self.columns, header=True), "log")
        write_file(self.jsonl_path, jsonl_rows(kept), "log")
        self.waiting, self.written_at = [], -float("inf")
        return kept

    def append(self, rows: list[dict]) -> None:
        self.waiting.extend(dict(row) for row in rows)   # copies: a caller may go on changing its dicts
        self.write_if_due()

    def write_if_due(self) -> None:
        if self.waiting and time.monotonic() - self.written_at >= self.max_wait:
            self.write()

    def write(self) -> None:
        """Hand the waiting rows to the operating system (not synced: RunDir.sync_logs does that)."""
        if self.waiting:
            rows, self.waiting = self.waiting, []
            append_text(self.csv_path, csv_rows(rows, self.columns), durable=False)
            append_text(self.jsonl_path, jsonl_rows(rows), durable=False)
        self.written_at = time.monotonic()


def csv_rows(rows, columns: list[str], header: bool = False) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def jsonl_rows(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)
