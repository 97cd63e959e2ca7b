"""Which hyperparameters mattered in the search: Optuna's fANOVA per optimizer, on the
search trials that ran the full budget.

Optuna is imported only when some optimizer has enough trials for an estimate.
"""

from __future__ import annotations

import pandas as pd

from analysis.minimums import MIN_IMPORTANCE_TRIALS
from analysis.plotstyle import log_scaled
from analysis.sweep import Sweep
from trainables.record import SEARCH
from trainables.schema import COMPLETED, DIVERGED


def param_importances(sweep: Sweep, min_trials: int = MIN_IMPORTANCE_TRIALS) -> dict:
    """Per optimizer, Optuna's fANOVA importances {param: share} of its search trials that
    finished (completed or diverged, with the final val accuracy Optuna saw), or a string
    saying why there are none (too few trials, one parameter).

    Trials ASHA stopped are left out, as Optuna leaves out pruned trials: their accuracy
    after fewer epochs is not comparable. Distributions come from the space (or, without
    one, the observed ranges).
    """
    search = sweep.stage(SEARCH)
    found = {}
    for optimizer in sweep.optimizers:
        params = sweep.searched_params(optimizer)
        done = search[(search["optimizer"] == optimizer) & search["status"].isin([COMPLETED, DIVERGED])
                      & search["final_val_acc"].notna()]
        if len(params) < 2:
            found[optimizer] = f"one parameter searched ({', '.join(params) or 'none'}): nothing to rank"
        elif len(done) < min_trials:
            found[optimizer] = (f"{len(done)} finished trials (fewer than {min_trials}): "
                                "no importance estimate")
        else:
            found[optimizer] = _fanova(sweep, optimizer, params, done)
    return found


def _value_distribution(d):
    """Optuna's distribution of a searched value itself (fANOVA fits the values as
    recorded): a choice, an int range, or a float range on a log scale where the
    value's own scale is log (trainables.hparams.Transform.log_axis)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if d.transform is None:
        return CategoricalDistribution(list(d.values))
    if d.transform.integral:
        return IntDistribution(int(d.low), int(d.high))
    return FloatDistribution(d.low, d.high, log=d.transform.log_axis)


def _optuna_distributions(sweep: Sweep, optimizer: str, params: list[str], trials: pd.DataFrame) -> dict:
    from optuna.distributions import FloatDistribution

    if sweep.space is not None and optimizer in sweep.space.optimizers:
        dists = {}
        for name, d in sweep.space.distributions_for(optimizer).items():
            dists[name] = _value_distribution(d)
        return {name: dists[name] for name in params}
    return {name: FloatDistribution(float(trials[name].min()), float(trials[name].max()),
                                    log=bool(log_scaled(name) and (trials[name] > 0).all()))
            for name in params}


def _fanova(sweep: Sweep, optimizer: str, params: list[str], trials: pd.DataFrame) -> dict | str:
    """fANOVA importances from an in-memory study built from the finished trials."""
    import optuna
    from optuna.distributions import CategoricalDistribution, IntDistribution

    dists = _optuna_distributions(sweep, optimizer, params, trials)

    def typed(name, value):
        if isinstance(dists[name], IntDistribution):
            return int(value)
        return value if isinstance(dists[name], CategoricalDistribution) else float(value)

    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" lines
    try:
        study = optuna.create_study(direction="maximize")
        for row in trials.itertuples():
            study.add_trial(optuna.trial.create_trial(
                params={name: typed(name, getattr(row, name)) for name in params},
                distributions=dists, value=float(row.final_val_acc)))
        importances = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
        return {name: float(share) for name, share in importances.items()}
    except (RuntimeError, ValueError) as error:
        return f"fANOVA failed: {error}"
    finally:
        optuna.logging.set_verbosity(previous)
