"""Launch a sweep: `python launch.py --space quickstart` (local Ray) or `--address` a cluster.

Thin: parse the command line, resolve a `SweepPlan` (space + overrides + where it runs),
and hand it to `tune.sweep.run_sweep`. Bad input gives one line on stderr and exit 2
before any trial starts.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

from commandline import OneLineArgumentParser, from_here, python_command, quiet_libraries
from trainables.errors import ConfigError, check_range, printable, shown, store_error
from trainables.record import DEFAULT_STORE, default_studies_uri, default_tracking_uri

SMOKE_TEST = dict(trials_per_optimizer=1, max_epochs=1, grace_period=1, confirm_top_k=0, replicates=1)


def _number(kind, minimum, strict):
    """argparse type: a finite number of `kind` >= minimum (> with strict), with a clear message."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{shown(text)} is not a {kind.__name__}") from None
        try:
            return check_range("the value", value, minimum, low_open=strict, integral=kind is int)
        except ConfigError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    parse.__name__ = kind.__name__
    return parse


def _names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated names")
    return names


EXAMPLES = """examples:
  python launch.py                                  the quickstart on this machine (minutes on 2 CPUs)
  python launch.py --space compare_c100 --dry-run   what a space would run, and how many trial-epochs
  python launch.py --space my_space.yaml --optimizers adam,zsharp --num-samples 20
  python launch.py --space zsharp_c100 --address auto --storage s3://bucket/sweeps   on a Ray cluster
  python launch.py --space zsharp_c100 --resume     continue after a crash or Ctrl-C
"""


def build_parser() -> argparse.ArgumentParser:
    """The command line: every flag with its help, default and valid names (the registries'
    names, read without importing torch)."""
    from search_spaces import list_spaces
    from trainables.catalog import list_datasets, list_models, list_optimizers

    p = OneLineArgumentParser(prog="launch.py", description=__doc__.splitlines()[0], epilog=EXAMPLES,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="quickstart",
                   help=f"a named space ({', '.join(list_spaces())}) or a YAML file (default: %(default)s)")
    p.add_argument("--list-spaces", action="store_true", help="list the named spaces and exit")
    p.add_argument("--list-sweeps", action="store_true",
                   help="list the sweeps in the store (--storage, or --mlflow-uri): start, status, "
                        "trials and each optimizer's result, newest first; needs no Ray, and exit")
    p.add_argument("--show-space", metavar="NAME",
                   help="print a named space (or a YAML file's), with the flags below applied, as "
                        "a YAML file that --space reads back, and exit")
    p.add_argument("--num-samples", type=_number(int, 1, False), metavar="N",
                   help="trials per optimizer (default: the space's)")
    p.add_argument("--max-epochs", type=_number(int, 1, False), metavar="N",
                   help="epochs per trial (default: the space's)")
    p.add_argument("--optimizers", type=_names, metavar="A,B",
                   help=f"the optimizers compared, from {', '.join(list_optimizers())} (default: the space's)")
    p.add_argument("--model", help=f"{', '.join(list_models())} (default: the space's)")
    p.add_argument("--dataset", help=f"{', '.join(list_datasets())} (default: the space's)")
    p.add_argument("--data-dir", default="data", help="where data sets are (or are downloaded to) "
                                                      "(default: %(default)s)")
    p.add_argument("--address", help="an existing Ray cluster (host:port or auto); "
                                     "default: a local Ray started and stopped here")
    p.add_argument("--storage", default=DEFAULT_STORE, help="results folder or URI (s3://...) (default: %(default)s)")
    p.add_argument("--mlflow-uri", help="tracking server http://host:port; "
                                        "default: SQLite in the storage folder")
    p.add_argument("--optuna-storage", metavar="URL",
                   help="the searchers' Optuna database (an SQLAlchemy URL: sqlite:////path/optuna.db, "
                        "postgresql://host/db, ...); default: SQLite in the storage folder, or in "
                        "the working folder for remote storage")
    p.add_argument("--experiment", help="experiment name (default: the space's name)")
    p.add_argument("--resume", action="store_true", help="continue the experiment")
    p.add_argument("--dashboard", action="store_true",
                   help="serve the local Ray's dashboard on http://127.0.0.1:8265 while the sweep "
                        "runs (the dashboard extra; default: off)")
    p.add_argument("--cpus-per-trial", type=_number(float, 0, True), metavar="C",
                   help="CPUs each trial holds, > 0 (default: the space's)")
    p.add_argument("--gpus-per-trial", type=_number(float, 0, False), metavar="G",
                   help="GPUs each trial holds: a fraction of one, or whole GPUs (default: the space's)")
    p.add_argument("--max-concurrent", type=_number(int, 1, False), metavar="N",
                   help="trials running at once (default: the space's)")
    p.add_argument("--seed", type=_number(int, 0, False),
                   help="master seed: every replicate's searcher, training, holdout and confirm seeds "
                        "derive from it (default: the space's)")
    p.add_argument("--replicates", type=_number(int, 1, False), metavar="R",
                   help="independent replicates of each optimizer's search and confirm stage, the "
                        "verdict's unit of evidence (default: the space's; 1: intervals conditional "
                        "on one search)")
    p.add_argument("--confirm", type=_number(int, 0, False), metavar="K",
                   help="re-run the top K configs per optimizer with --seeds seeds "
                        "(default: the space's confirm stage; 0: none)")
    p.add_argument("--seeds", type=_number(int, 1, False), metavar="N",
                   help="seeds per confirmed config (default: the space's)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved plan, its cost in trial-epochs and what would stop it "
                        "here, start nothing (default: run)")
    p.add_argument("--estimate", action="store_true",
                   help="a dry run that also times a few training steps of each optimizer here "
                        "(up to 20 s) for the wall time and CPU/GPU-hours (default: no timing)")
    p.add_argument("--sample", type=_number(int, 1, False), metavar="N",
                   help="print N configurations drawn from each optimizer's prior (JSON lines: "
                        "what the search's random start tries), start nothing")
    p.add_argument("--smoke-test", action="store_true",
                   help="one trial of one epoch per optimizer: runs in seconds")
    return p


def _space_overrides(args) -> dict:
    picked = {"model": args.model, "dataset": args.dataset, "optimizers": args.optimizers,
              "trials_per_optimizer": args.num_samples, "max_epochs": args.max_epochs,
              "cpus_per_trial": args.cpus_per_trial, "gpus_per_trial": args.gpus_per_trial,
              "max_concurrent": args.max_concurrent, "seed": args.seed, "replicates": args.replicates}
    overrides = {k: v for k, v in picked.items() if v is not None}
    if args.smoke_test:
        overrides.update(SMOKE_TEST)
    return overrides


def resolve_plan(args, argv: list[str]):
    """Space + overrides + locations -> a validated SweepPlan (raises ConfigError)."""
    from search_spaces import get_space
    from tune.plan import SweepPlan, is_uri, local_storage

    space = get_space(args.space)
    space = space.with_overrides(**_space_overrides(args))
    local = local_storage(args.storage)
    storage = args.storage if is_uri(args.storage) else local  # made absolute for Ray
    tracking = tracking_uri(args)
    # Only the driver reads and writes the studies: beside it, wherever the results go.
    studies = args.optuna_storage or default_studies_uri(local or os.getcwd())
    return SweepPlan(space=space, experiment=args.experiment or space.name, storage=storage,
                     tracking_uri=tracking, optuna_uri=studies, data_dir=os.path.abspath(args.data_dir),
                     address=args.address, resume=args.resume, dashboard=args.dashboard,
                     command=shlex.join(python_command(from_here(__file__), *argv)),
                     confirm_top_k=(space.confirm_top_k if args.confirm is None or args.smoke_test
                                    else args.confirm),
                     confirm_seeds=args.seeds or space.confirm_seeds,
                     confirm_requested=args.confirm is not None)


def tracking_uri(args) -> str:
    """The MLflow store the flags name: --mlflow-uri, else the one in the --storage folder."""
    from tune.plan import SweepError, local_storage

    if args.mlflow_uri is not None:
        return args.mlflow_uri
    local = local_storage(args.storage)
    if local is None:
        raise SweepError("--mlflow-uri is required when --storage is not a local folder")
    return default_tracking_uri(local)


def print_sweeps(args) -> None:
    """The sweeps the store holds, a line each (analysis.load.sweep_rows)."""
    from analysis.load import sweep_rows
    from trainables.catalog import optimizer_label
    from trainables.record import sqlite_path, tracking_uri_problem

    uri = tracking_uri(args)
    problem, database = tracking_uri_problem(uri), sqlite_path(uri)
    if problem or (database is not None and not database.is_file()):
        raise ConfigError(problem or f"no MLflow store at {database} (--storage, or --mlflow-uri)")
    quiet_libraries()
    try:
        rows = sweep_rows(uri)
    except Exception as error:  # noqa: BLE001  MLflow's and SQLAlchemy's errors share no base
        raise ConfigError(f"the MLflow store {uri} cannot be read ({store_error(error)})") from None
    if not rows:
        print(f"no sweeps in {uri}")
    for row in rows:
        best_first = sorted(row["results"].items(), key=lambda item: -item[1][1])
        results = ", ".join(f"{optimizer_label(o)} {100 * v:.1f}% {what}" for o, (what, v) in best_first)
        print(printable(f"{row['experiment']:28s} {row['started']:%Y-%m-%d %H:%M} UTC  {row['status']:28s} "
                        f"{row['trials']:5d} trials  {results or 'no result yet'}"))


def print_samples(space, count: int) -> None:
    """`count` search-trial configs per optimizer from its prior, one JSON object a line,
    reproducible from the space's seed."""
    import numpy as np

    rng = np.random.default_rng(space.seed)
    for optimizer in space.optimizers:
        for _ in range(count):
            print(json.dumps(space.sample(optimizer, rng)))


def print_dry_run(plan, timed: bool) -> None:
    """The plan, its cost (timed here with `timed`) and the warnings that apply."""
    from tune import estimate

    print(plan.describe())
    times = estimate.epoch_times(plan) if timed else None
    print(estimate.describe(plan, times))
    for warning in estimate.dry_run_warnings(plan):
        print(f"warning: {warning}")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    from tune.plan import SweepFailed  # here, not at the top: --help stays quick

    try:
        if args.list_spaces:
            from search_spaces import get_space, list_spaces
            for name in list_spaces():
                print(printable(f"{name:22s} {get_space(name).description}"))
            return 0
        if args.list_sweeps:
            print_sweeps(args)
            return 0
        if args.show_space:
            from search_spaces import get_space, space_yaml
            print(space_yaml(get_space(args.show_space).with_overrides(**_space_overrides(args))), end="")
            return 0
        plan = resolve_plan(args, argv)
        if args.sample:
            print_samples(plan.space, args.sample)
            return 0
        if args.dry_run or args.estimate:
            print_dry_run(plan, args.estimate)
            return 0
        from tune.sweep import run_sweep
        return run_sweep(plan)
    except ConfigError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    except SweepFailed as error:  # not the input's fault
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the sweep took over its signals: nothing ran
        print(f"{parser.prog}: interrupted before the sweep started", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
