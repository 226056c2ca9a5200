"""What ``denoise run`` records of each stage's time in run.json, and what a skipped stage keeps of the run
that made its output.

A stage's summary gets ``wall_seconds`` (its wall time, loading included) and ``out_stamp`` (the size and
mtime of the output it wrote). A stage skipped because its output was current is ``reused``: its summary is
the one the earlier run.json recorded for that output (``wall_seconds`` and all), where that record's
``out_stamp`` matches the file on disk, with ``check_seconds`` this run's time for the check;
``wall_seconds_of`` says which run's seconds ``wall_seconds`` are. Every output is written by an atomic
rename, so a remade file has another mtime: an earlier record of a file since remade (a killed run with other
options in between) does not match, and then ``wall_seconds`` is only the check's time (``CHECKED``).
"""

from __future__ import annotations

import json
from pathlib import Path

MADE = "the run that made it"  # wall_seconds_of: the seconds of the run that wrote the output
CHECKED = "this check"  # wall_seconds_of: no matching earlier record; the seconds of this run's check only


def out_stamp(out) -> dict | None:
    """``{"size", "mtime_ns"}`` of the file ``out`` (None where there is none)."""
    try:
        stat = Path(out).stat()
    except (OSError, TypeError, ValueError):
        return None
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def earlier_stages(run_json: Path) -> dict[tuple[int, str], dict]:
    """The stage summaries of an earlier run's run.json, by ``(round, stage)``; empty where there is none, or
    it cannot be read (an unreadable record only costs the reused stages their earlier timing).

    A record of a stage that ran, written before ``out_stamp`` was recorded (an older denoise), describes its
    output if that file is no newer than run.json (a later run that remade it, killed before writing its own
    run.json, left a newer file): it gets the file's stamp."""
    try:
        written = Path(run_json).stat().st_mtime_ns
        record = json.loads(Path(run_json).read_text())
        stages = {(int(entry["round"]), stage): summary for entry in record["rounds"]
                  for stage, summary in entry.items() if isinstance(summary, dict)}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        return {}
    for summary in stages.values():
        stamp = out_stamp(summary.get("out"))
        if "out_stamp" not in summary and not summary.get("skipped") and stamp and stamp["mtime_ns"] <= written:
            summary["out_stamp"] = stamp
    return stages


def stage_record(summary: dict, seconds: float, earlier: dict | None) -> dict:
    """The run.json record of a stage whose call returned ``summary`` after ``seconds``; ``earlier``: what the
    previous run.json recorded for the same round and stage (None if nothing)."""
    stamp = out_stamp(summary.get("out"))
    if not summary.get("skipped"):
        return {**summary, "wall_seconds": seconds, **({"out_stamp": stamp} if stamp else {})}
    if (earlier is not None and stamp is not None and earlier.get("out_stamp") == stamp
            and earlier.get("wall_seconds_of", MADE) == MADE and isinstance(earlier.get("wall_seconds"), (int, float))):
        return {**earlier, **summary, "reused": True, "wall_seconds_of": MADE, "check_seconds": seconds}
    return {**summary, "reused": True, "wall_seconds": seconds, "wall_seconds_of": CHECKED, "check_seconds": seconds,
            **({"out_stamp": stamp} if stamp else {})}
