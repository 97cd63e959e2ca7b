"""How much of a sweep's trial slots went to training: utilisation and per-trial overhead.

    python benchmarks/slot_utilisation.py --results results/quickstart-20261202-153056

Reads a finished (or interrupted) sweep's Ray experiment folder and every stage folder
beside it named `<experiment>-*` (the confirm stage, `<experiment>-confirm`, and any
other), from the trials' result.json files only (plain JSON lines, never a pickle), and
the slots (trials run at once) from the sweep's space.json (`max_concurrent`; --slots
overrides it). Per stage it prints:

- wall: first trial start to last trial end. A trial's iteration i ends at Ray's
  `timestamp` (whole seconds, rounded down: taken as timestamp + 0.5) and lasted
  `time_this_iter_s`; the trial starts where its first iteration does. Actor start-up
  before a trial's first iteration is outside it.
- training: the sum over trials of their epochs' `epoch_time_s` (train + evaluation of
  each epoch, as the trial timed it). An epoch re-run after a restore counts again (it
  took the slot again); a result only re-reported (same epoch, same epoch_time_s, as a
  trial resumed at its last epoch does) counts once.
- utilisation: training / (slots x wall).
- lost/trial: (slots x wall - training) / trials, all slot time not spent training,
  including slots left idle at the stage's end.
- and where the lost time goes, each a mean per trial:
  - startup and report/epoch split the trial's own overhead, time_total_s minus the sum
    of its epoch_time_s (Ray times each iteration on the worker, from the driver's call
    for a result to the result): startup is the first iteration's excess (from the trial
    function's start: fetching a checkpoint, loading the data, building the model, and
    the first epoch's checkpoint and report), report/epoch the later iterations' excess
    per epoch (the checkpoint written, handed to Ray and copied to storage; in a confirm
    run, its last epoch's flatness diagnostics too);
  - driver/epoch: per interval between two epochs of a trial, the trial's span (first
    iteration start to last end) minus the sum of its iterations' time_this_iter_s: the
    time the trial waited. Tune's function trainables report synchronously, so a trial
    is blocked from its report until the driver has processed the result (scheduler,
    searcher, callbacks, snapshots) and asked for the next one. From whole-second
    timestamps: +-1 s per trial, but without bias, so the mean over many trials is close;
  - gap: on each worker process (`pid`; Tune reuses actors, so a process is a slot),
    from one trial's end to the next trial's start (the actor reset, the driver choosing
    and starting the trial), +-1 s each, unbiased likewise.

Only what result.json holds is measured: time outside trials (Ray's start, the driver's
checks, the summary and report) is not; compare with the driver's own wall time.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

_HALF_SECOND = 0.5  # Ray's timestamp is the second the iteration ended in, rounded down


@dataclass(frozen=True)
class Run:
    """One uninterrupted run of a trial on one worker (a restored trial has several),
    from its result.json."""

    name: str
    pid: int
    start: float        # wall clock, seconds since the epoch
    end: float
    training: float     # sum of its epochs' epoch_time_s
    iterations: int     # results reported
    startup: float      # first iteration's time_this_iter_s - its epoch_time_s
    report: float       # the later iterations' time_this_iter_s - epoch_time_s, summed
    waited: float       # span - sum of time_this_iter_s: blocked on the driver


def read_rows(path: Path) -> list[dict]:
    """The result rows of a result.json (JSON object lines with the timing keys; any
    other line is skipped)."""
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and _timed(row):
            rows.append(row)
    return rows


def _timed(row: dict) -> bool:
    return all(isinstance(row.get(k), (int, float)) and not isinstance(row.get(k), bool)
               for k in ("timestamp", "time_this_iter_s", "epoch_time_s"))


def trial_runs(name: str, rows: list[dict]) -> list[Run]:
    """A trial's runs: its rows split where Ray restarted it (iterations_since_restore
    back at 1). A result only re-reported (an epoch and epoch_time_s already seen) adds
    no training."""
    seen, runs, current = set(), [], []
    for row in rows:
        if current and row.get("iterations_since_restore") == 1:
            runs.append(current)
            current = []
        key = (row.get("epoch"), row["epoch_time_s"])
        current.append((row, 0.0 if key in seen else float(row["epoch_time_s"])))
        seen.add(key)
    runs.append(current)
    return [_run(name, run) for run in runs if run]


def _run(name: str, rows: list[tuple[dict, float]]) -> Run:
    iterations = [float(r["time_this_iter_s"]) for r, _ in rows]
    epochs = [epoch for _, epoch in rows]
    ends = [float(r["timestamp"]) + _HALF_SECOND for r, _ in rows]
    start = ends[0] - iterations[0]
    return Run(name, int(rows[0][0].get("pid", 0)), start, ends[-1], sum(epochs), len(rows),
               iterations[0] - epochs[0], sum(iterations[1:]) - sum(epochs[1:]),
               ends[-1] - start - sum(iterations))


def stage_runs(folder: Path) -> list[Run]:
    """The timed runs of one stage folder's trials, in their start order."""
    runs = [run for path in sorted(folder.glob("*/result.json"))
            for run in trial_runs(path.parent.name, read_rows(path))]
    return sorted(runs, key=lambda r: r.start)


def stages(folder: Path) -> dict[str, Path]:
    """The sweep's stage folders: `search` (the experiment folder) and each
    `<experiment>-<stage>` folder beside it."""
    found = {"search": folder}
    for other in sorted(folder.parent.glob(folder.name + "-*")):
        if other.is_dir() and any(other.glob("*/result.json")):
            found[other.name[len(folder.name) + 1:]] = other
    return found


def slots_of(folder: Path) -> int | None:
    """`max_concurrent` of the sweep's space.json (None if it has none)."""
    try:
        value = json.loads((folder / "space.json").read_text()).get("max_concurrent")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def gaps(runs: list[Run]) -> list[float]:
    """On each worker process, the time from one run's end to the next one's start."""
    by_pid: dict[int, list[Run]] = {}
    for run in runs:
        by_pid.setdefault(run.pid, []).append(run)
    return [b.start - a.end for mine in by_pid.values() for a, b in zip(mine, mine[1:])]


def figures(runs: list[Run], slots: int) -> dict[str, float]:
    """A stage's figures from its trials' runs (the module docstring says what each is);
    the per-trial means are over trials, each trial's runs together."""
    trials = len({r.name for r in runs})
    wall = max(r.end for r in runs) - min(r.start for r in runs)
    training = sum(r.training for r in runs)
    epochs = sum(r.iterations for r in runs)
    later = sum(r.iterations - 1 for r in runs)
    between = gaps(runs)
    return {"trials": trials, "slots": slots, "wall": wall, "training": training,
            "utilisation": training / (slots * wall) if wall > 0 else float("nan"),
            "lost": (slots * wall - training) / trials,
            "startup": sum(r.startup for r in runs) / trials,
            "report": sum(r.report for r in runs) / later if later else float("nan"),
            "driver": sum(r.waited for r in runs) / later if later else float("nan"),
            "gap": sum(between) / len(between) if between else float("nan"),
            "epoch": training / epochs, "epochs": epochs, "intervals": later}


HEADER = (f"{'stage':10s} {'trials':>6s} {'slots':>5s} {'wall s':>8s} {'training s':>10s} "
          f"{'utilisation':>11s} {'lost s/trial':>12s} {'startup s':>9s} {'report s/epoch':>14s} "
          f"{'driver s/epoch':>14s} {'gap s':>6s} {'epoch s':>7s}")


def line(stage: str, f: dict[str, float]) -> str:
    return (f"{stage:10s} {f['trials']:6d} {f['slots']:5d} {f['wall']:8.1f} {f['training']:10.1f} "
            f"{f['utilisation']:11.3f} {f['lost']:12.2f} {f['startup']:9.2f} {f['report']:14.3f} "
            f"{f['driver']:14.3f} {f['gap']:6.2f} {f['epoch']:7.2f}")


def report(folder: Path, slots: int | None = None, out=print) -> int:
    """Print each stage's figures and, for several stages, the whole; returns the exit
    status (2 when nothing can be measured)."""
    slots = slots or slots_of(folder)
    if slots is None:
        print(f"no max_concurrent in {folder / 'space.json'}; pass --slots", file=sys.stderr)
        return 2
    timed = {stage: stage_runs(path) for stage, path in stages(folder).items()}
    timed = {stage: runs for stage, runs in timed.items() if runs}
    if not timed:
        print(f"no trial with timed results in {folder}", file=sys.stderr)
        return 2
    out(HEADER)
    each = [figures(runs, slots) for runs in timed.values()]
    for stage, stage_figures in zip(timed, each):
        out(line(stage, stage_figures))
    if len(each) > 1:  # walls added: the driver's time between stages is no trial's
        out(line("all", _combined(each, slots)))
    return 0


def _combined(each: list[dict[str, float]], slots: int) -> dict[str, float]:
    """The stages together: trials, walls, training and epochs added; the means weighted
    by trials (by the intervals between epochs for the per-epoch ones)."""
    trials, epochs = sum(f["trials"] for f in each), sum(f["epochs"] for f in each)
    wall, training = sum(f["wall"] for f in each), sum(f["training"] for f in each)

    def mean(key: str, weight: str) -> float:
        pairs = [(f[key], f[weight]) for f in each if f[key] == f[key]]  # NaN left out
        return sum(v * w for v, w in pairs) / sum(w for _, w in pairs) if pairs else float("nan")

    return {"trials": trials, "slots": slots, "wall": wall, "training": training,
            "utilisation": training / (slots * wall), "lost": (slots * wall - training) / trials,
            "startup": mean("startup", "trials"), "report": mean("report", "intervals"),
            "driver": mean("driver", "intervals"), "gap": mean("gap", "trials"),
            "epoch": training / epochs, "epochs": epochs,
            "intervals": sum(f["intervals"] for f in each)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, required=True,
                        help="a sweep's folder (<storage>/<experiment>, its `results` line)")
    parser.add_argument("--slots", type=int, help="trials run at once (default: the space's max_concurrent)")
    args = parser.parse_args()
    if not args.results.is_dir():
        print(f"no folder {args.results}", file=sys.stderr)
        return 2
    return report(args.results, args.slots)


if __name__ == "__main__":
    sys.exit(main())
