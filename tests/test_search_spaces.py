"""Search spaces (search_spaces/): built-in spaces, conditional distributions, files, errors.

Every space is checked against the real registries and `TrialConfig`; bad spaces and
files must fail with a one-line SpaceError that names where and which field.
"""

import inspect
import json
import os

import pytest
import torch
import yaml

from search_spaces import (
    Distribution, SearchSpace, SpaceError, get_space, list_spaces, load_space_file, register_space,
)
from search_spaces import registry
from conftest import PUBLISHED, ROOT, run_module
from trainables.catalog import get_optimizer_info, hparams_of, list_optimizers
from trainables.config import TrialConfig

BUILTIN = list_spaces()  # before a test registers its own
SAM_FAMILY = {o for o in list_optimizers() if get_optimizer_info(o).wrapper}


def published_default(optimizer: str, name: str):
    """The default its authors publish (conftest.PUBLISHED for the SAM family, torch's signature
    for the base), or the seed's coupled weight decay (TrialConfig)."""
    if name in PUBLISHED.get(optimizer, {}):
        return PUBLISHED[optimizer][name]
    if name == "lr":
        return inspect.signature(torch.optim.Adam.__init__).parameters["lr"].default
    if name == "weight_decay" and optimizer == "adamw":
        return inspect.signature(torch.optim.AdamW.__init__).parameters["weight_decay"].default
    return getattr(TrialConfig(), name)


def span(dist: Distribution) -> float:
    """How many times the range spans on its own scale (of 1 - value for a complement)."""
    if dist.kind == "loguniform_complement":
        return (1 - dist.low) / (1 - dist.high)
    return dist.high / dist.low


def ends(dist: Distribution) -> tuple:
    return dist.values if dist.kind == "choice" else (dist.low, dist.high)


def quickstart_data() -> dict:
    return get_space("quickstart").to_dict()


def assert_one_line_error(err: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(err.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, (part, message)


# ---- built-in spaces --------------------------------------------------------------------

def test_builtin_spaces_hold_the_demo_a_comparison_and_zsharp_alone():
    assert list_spaces() == sorted(list_spaces())
    kinds = {name: get_space(name).optimizers for name in BUILTIN}
    assert "quickstart" in kinds  # the README's make demo
    assert any(SAM_FAMILY <= set(optimizers) for optimizers in kinds.values())
    assert any(optimizers == ("zsharp",) for optimizers in kinds.values())


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_space_round_trips_through_dict_yaml_and_json(name, tmp_path):
    space = get_space(name)
    assert space.name == name and space.description and "\n" not in space.description
    assert SearchSpace.from_dict(space.to_dict(), "test") == space
    yaml_path = tmp_path / f"{name}.yaml"
    yaml_path.write_text(yaml.safe_dump(space.to_dict()))
    assert get_space(str(yaml_path)) == space
    json_path = tmp_path / f"{name}.json"  # any existing file is read as YAML (JSON is YAML)
    json_path.write_text(json.dumps(space.to_dict()))
    assert get_space(json_path) == space


@pytest.mark.parametrize("name", BUILTIN)
def test_show_space_prints_a_file_that_loads_back_as_the_same_space(name, tmp_path, capsys):
    import launch

    assert launch.main(["--show-space", name]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"# search space '{name}' (launch.py --show-space {name})")
    path = tmp_path / "shown.yaml"
    path.write_text(text)
    assert get_space(str(path)) == get_space(name)
    assert launch.main(["--show-space", name, "--max-epochs", "3"]) == 0  # the flags applied
    path.write_text(capsys.readouterr().out)
    assert get_space(str(path)) == get_space(name).with_overrides(max_epochs=3)


def test_the_example_file_loads_and_a_file_of_the_required_keys_alone_gets_the_defaults(tmp_path):
    example = get_space(str(ROOT / "search_spaces" / "example.yaml"))
    assert (example.name, example.optimizers, example.replicates) == ("example", ("adam", "zsharp"), 2)
    assert example.distributions_for("zsharp")["alpha"] == Distribution("loguniform_complement", 0.5, 0.99)
    assert "alpha" not in example.distributions_for("adam")  # Adam reads no alpha
    required = {k: v for k, v in yaml.safe_load((ROOT / "search_spaces" / "example.yaml").read_text()).items()
                if k in ("name", "description", "dataset", "model", "optimizers", "search", "max_epochs",
                         "trials_per_optimizer")}
    path = tmp_path / "minimal.yaml"
    path.write_text(yaml.safe_dump(required))
    minimal = get_space(str(path))
    # The defaults as the README states them (ASHA as Ray's own, one trial of 1 CPU at a time).
    assert (minimal.grace_period, minimal.reduction_factor, minimal.max_concurrent, minimal.cpus_per_trial,
            minimal.gpus_per_trial, minimal.fixed, minimal.confirm_top_k) == (1, 4, 1, 1, 0, {}, 0)
    for key in required:
        smaller = {k: v for k, v in required.items() if k != key}
        path.write_text(yaml.safe_dump(smaller))
        with pytest.raises(SpaceError, match=f"missing key\\(s\\) {key}"):
            get_space(str(path))


@pytest.mark.parametrize("name", BUILTIN)
def test_every_trial_a_space_can_sample_is_valid(name):
    space = get_space(name)
    for optimizer in space.optimizers:
        base = space.base_config(optimizer)
        config = TrialConfig.from_dict(base)
        assert (config.dataset, config.model, config.optimizer) == (space.dataset, space.model, optimizer)
        assert config.epochs == space.max_epochs
        for hparam, dist in space.distributions_for(optimizer).items():
            for value in ends(dist):
                assert getattr(TrialConfig.from_dict({**base, hparam: value}), hparam) == value


@pytest.mark.parametrize("name", BUILTIN)
def test_each_optimizer_searches_only_what_it_takes_and_leaves_its_own_knobs_at_their_defaults(name):
    space = get_space(name)
    for optimizer in space.optimizers:
        takes = {h.name for h in hparams_of(optimizer, space.base_config(optimizer)["base"])}
        searched = set(space.distributions_for(optimizer))
        assert "lr" in searched and searched <= takes, optimizer
        # Its own knobs: searched, or left at their published defaults (the quickstart's eta).
        assert all(h in searched or h not in space.fixed for h in get_optimizer_info(optimizer).own_hparams)


@pytest.mark.parametrize("name", BUILTIN)
def test_every_range_is_on_its_own_scale_around_the_published_default(name):
    space = get_space(name)
    for optimizer in space.optimizers:
        for hparam, dist in space.distributions_for(optimizer).items():
            where = f"{name}: {optimizer} {hparam}"
            if name == "quickstart" and hparam == "lr":
                continue  # around the digits optimum instead (builtin.QUICKSTART_LR)
            assert dist.scale in ("log", "log_complement"), where
            assert span(dist) >= 30 - 1e-9, where
            assert 0.1 <= dist.position(published_default(optimizer, hparam)) <= 0.9, where


@pytest.mark.parametrize("name", BUILTIN)
def test_weight_decay_is_searched_for_every_optimizer_or_none(name):
    space = get_space(name)
    assert len({"weight_decay" in space.distributions_for(o) for o in space.optimizers}) == 1


def test_each_sam_variant_has_its_own_rho_range():
    space = get_space("compare_c10")
    rho = {o: space.distributions_for(o)["rho"] for o in ("sam", "asam", "fsam", "zsharp")}
    assert len({(d.low, d.high) for d in rho.values()}) == 3  # SAM and Friendly-SAM share one
    assert rho["asam"].low > rho["sam"].low and rho["zsharp"].high < rho["sam"].high


@pytest.mark.parametrize("name", ["compare_c10", "compare_c100"])
def test_comparison_gives_every_optimizer_the_same_trials_and_budget(name):
    space = get_space(name)
    assert SAM_FAMILY <= set(space.optimizers) and set(space.optimizers) - SAM_FAMILY  # and a 1-pass one
    # Five trials per searched dimension for the widest search.
    assert space.trials_per_optimizer >= 5 * max(len(space.distributions_for(o)) for o in space.optimizers)
    configs = [space.base_config(o) for o in space.optimizers]
    assert {c["epochs"] for c in configs} == {space.max_epochs}
    assert all({k: v for k, v in c.items() if k != "optimizer"} ==
               {k: v for k, v in configs[0].items() if k != "optimizer"} for c in configs)


def test_zsharp_spaces_search_only_zsharp_on_an_adam_base_in_fp32():
    for name in ("zsharp_c10", "zsharp_c100", "zsharp_tinyimagenet"):
        space = get_space(name)
        assert space.optimizers == ("zsharp",) and space.model == "res56s"
        assert space.fixed["base"] == "adam" and space.fixed["precision"] == "fp32"
        assert "BatchNorm" in space.description and "normalised once" in space.description
        assert set(space.distributions_for("zsharp")) == {"lr", "rho", "alpha"}


def test_quickstart_fits_two_cpu_cores():
    space = get_space("quickstart")
    assert space.gpus_per_trial == 0
    assert space.cpus_per_trial * space.max_concurrent <= 2


def test_comparisons_are_replicated_and_single_optimizer_spaces_not():
    for name in list_spaces():
        space = get_space(name)
        compares = len(space.optimizers) > 1
        assert space.replicates == (3 if compares else 1), name
        # The primary contrast: ZSharp against SAM wherever both are compared.
        assert space.primary == (("zsharp", "sam") if {"zsharp", "sam"} <= set(space.optimizers) else None)


def test_the_primary_contrast_follows_the_optimizers():
    space = get_space("quickstart")
    assert space.with_overrides(optimizers=["adam", "sam"]).primary is None
    chosen = space.with_overrides(primary_contrast=["asam", "adam"])
    assert chosen.primary == ("asam", "adam")
    assert SearchSpace.from_dict(chosen.to_dict(), "again") == chosen
    # Dropping one of its optimizers drops an explicit contrast too (no longer compared).
    assert chosen.with_overrides(optimizers=["sam", "asam"]).primary is None


def test_get_space_returns_a_fresh_copy():
    space = get_space("quickstart")
    space.fixed["batch_size"] = 1
    assert get_space("quickstart").fixed["batch_size"] == 128


# ---- conditional search -----------------------------------------------------------------

def sgd_space(**changes) -> dict:
    return {**quickstart_data(), "optimizers": ["sgd", "sam", "adam"], "fixed": {"base": "sgd"},
            "search": {"lr": {"loguniform": [1e-3, 1e-1]}, "momentum": {"uniform": [0.8, 0.95]},
                       "rho": {"uniform": [0.01, 0.2]}},
            "search_per_optimizer": {}, **changes}


def test_momentum_is_searched_only_on_an_sgd_base():
    space = SearchSpace.from_dict(sgd_space(), "test")
    assert set(space.distributions_for("sgd")) == {"lr", "momentum"}
    assert set(space.distributions_for("sam")) == {"lr", "momentum", "rho"}
    assert set(space.distributions_for("adam")) == {"lr"}
    with pytest.raises(SpaceError) as err:
        SearchSpace.from_dict(sgd_space(optimizers=["adam", "sam"], fixed={"base": "adam"}), "test")
    assert_one_line_error(err, "search.momentum")


def test_per_optimizer_entries_add_and_override():
    data = sgd_space(search_per_optimizer={"sam": {"rho": {"choice": [0.05, 0.1]},
                                                   "weight_decay": {"loguniform": [1e-5, 1e-3]}}})
    space = SearchSpace.from_dict(data, "test")
    assert space.distributions_for("sam")["rho"] == Distribution("choice", values=(0.05, 0.1))
    assert "weight_decay" in space.distributions_for("sam")
    assert "weight_decay" not in space.distributions_for("sgd")


def test_distributions_for_an_optimizer_outside_the_space():
    with pytest.raises(SpaceError) as err:
        get_space("zsharp_c10").distributions_for("sam")
    assert_one_line_error(err, "'sam'", "zsharp_c10")


# ---- overrides --------------------------------------------------------------------------

def test_override_model_and_dataset():
    space = get_space("quickstart")
    changed = space.with_overrides(model="vgg16_bn", dataset="c10")
    assert (changed.model, changed.dataset) == ("vgg16_bn", "c10")
    assert TrialConfig.from_dict(changed.base_config("zsharp")).model == "vgg16_bn"
    assert space.model == "res8s"


@pytest.mark.parametrize("changes, field", [
    ({"model": "nope"}, "model"),
    ({"optimizers": "sam"}, "optimizers"),
    ({"max_concurrent": 0}, "max_concurrent"),
    ({"gpus_per_trial": -0.5}, "gpus_per_trial"),
    ({"colour": "red"}, "colour"),
])
def test_bad_override(changes, field):
    with pytest.raises(SpaceError) as err:
        get_space("quickstart").with_overrides(**changes)
    assert_one_line_error(err, "quickstart", field)


def test_override_optimizers_keeps_what_they_take():
    full = get_space("compare_c10")
    space = full.with_overrides(optimizers=("adam", "sam", "sgd"))
    assert set(space.search) == {"lr", "weight_decay"} and set(space.search_per_optimizer) == {"sam"}
    assert set(space.distributions_for("sgd")) == {"lr", "weight_decay"}
    assert space.distributions_for("sam")["rho"] == full.distributions_for("sam")["rho"]
    asam = full.with_overrides(optimizers=["asam"])
    assert asam.distributions_for("asam") == full.distributions_for("asam")


def test_override_max_epochs_lowers_grace_period():
    space = get_space("compare_c10")
    assert space.with_overrides(max_epochs=10).grace_period == 10
    assert space.with_overrides(max_epochs=100).grace_period == 20
    smoke = space.with_overrides(trials_per_optimizer=1, max_epochs=1, grace_period=1)
    assert (smoke.trials_per_optimizer, smoke.max_epochs, smoke.grace_period) == (1, 1, 1)


# ---- distributions ----------------------------------------------------------------------

@pytest.mark.parametrize("spec, expected", [
    ({"uniform": [0, 1]}, Distribution("uniform", 0.0, 1.0)),
    ({"loguniform": [1e-4, 1e-2]}, Distribution("loguniform", 1e-4, 1e-2)),
    ({"int": [1.0, 5]}, Distribution("int", 1, 5)),
    ({"choice": [64, 128.0]}, Distribution("choice", values=(64, 128.0))),
])
def test_distribution_spec_round_trip(spec, expected):
    dist = Distribution.from_spec(spec, "here")
    assert dist == expected and Distribution.from_spec(dist.to_spec(), "here") == dist
    assert all(type(a) is type(b) for a, b in zip(ends(dist), ends(expected)))


@pytest.mark.parametrize("spec", [
    [1e-4, 1e-2], {"normal": [0, 1]}, {"uniform": [0.1]}, {"uniform": 0.1}, {"int": [1, 2.5]},
    {"choice": []}, {"choice": [1, 1]}, {"uniform": [0, True]}, {"uniform": [0, float("nan")]},
    {"uniform": [0, 1], "int": [0, 1]},
])
def test_malformed_distribution_spec(spec):
    with pytest.raises(SpaceError) as err:
        Distribution.from_spec(spec, "search.lr")
    assert_one_line_error(err, "search.lr")


# ---- bad spaces -------------------------------------------------------------------------

DROP = object()


def search_with(name: str, spec) -> dict:
    return {**quickstart_data()["search"], name: spec}


def zsharp_with(name: str, spec) -> dict:
    data = quickstart_data()["search_per_optimizer"]
    return {**data, "zsharp": {**data["zsharp"], name: spec}}


BAD_SPACES = [
    ({"colour": "red"}, "colour"),
    ({"model": DROP}, "model"),
    ({"name": "a/b"}, "name"),
    ({"dataset": "imagenet"}, "dataset"),
    ({"optimizers": ["adam", "nope"]}, "nope"),
    ({"optimizers": []}, "optimizers"),
    ({"optimizers": ["adam", "sam", "sam", "asam", "fsam", "zsharp"]}, "'sam' is listed twice"),
    ({"search_per_optimizer": zsharp_with("alpha", {"loguniform_complement": [0.5, 1.0]})},
     "search_per_optimizer.zsharp.alpha"),
    ({"search": search_with("lr", {"loguniform": [0, 1e-2]})}, "search.lr"),
    ({"search": search_with("rho", {"uniform": [0.2, 0.1]})}, "search.rho"),
    ({"search": search_with("rho", {"uniform": [0.2, 0.2]})}, "search.rho"),
    ({"search": search_with("lr", [1e-4, 1e-2])}, "search.lr"),
    ({"search": search_with("lr", {"normal": [1e-4, 1e-2]})}, "search.lr"),
    ({"search": search_with("batch_size", {"uniform": [64, 256]})}, "search.batch_size"),
    ({"search": search_with("seed", {"choice": [0, 1.5]})}, "search.seed"),
    ({"search": search_with("colour", {"uniform": [0, 1]})}, "search.colour"),
    ({"search": search_with("epochs", {"int": [1, 5]})}, "search.epochs"),
    ({"search": "lr"}, "search"),
    ({"optimizers": ["sam"], "search_per_optimizer": {}, "search": search_with("alpha", {"uniform": [0.5, 0.9]})},
     "search.alpha"),
    ({"fixed": {"eval_split": "test"}}, "eval_split"),
    ({"refit": "yes"}, "refit"),
    ({"search_per_optimizer": {"asam": {"alpha": {"uniform": [0.5, 0.9]}}}},
     "search_per_optimizer.asam.alpha"),
    ({"search_per_optimizer": {"sgd": {"lr": {"uniform": [0.1, 0.2]}}}}, "search_per_optimizer"),
    ({"search_per_optimizer": {"asam": {"rho": {"uniform": [-1.0, 2.0]}}}},
     "search_per_optimizer.asam.rho"),
    ({"fixed": {"epochs": 10}}, "epochs"),
    ({"fixed": {"colour": "red"}}, "colour"),
    ({"fixed": {"lr": 1e-3}}, "lr"),
    ({"fixed": {"base": "rmsprop"}}, "base"),
    ({"fixed": {"batch_size": 12.5}}, "batch_size"),
    ({"max_epochs": 0}, "max_epochs"),
    ({"max_epochs": 6.5}, "max_epochs"),
    ({"grace_period": 11}, "grace_period"),
    ({"reduction_factor": 1}, "reduction_factor"),
    ({"trials_per_optimizer": 0}, "trials_per_optimizer"),
    ({"max_concurrent": True}, "max_concurrent"),
    ({"cpus_per_trial": 0}, "cpus_per_trial"),
    ({"gpus_per_trial": 1.5}, "gpus_per_trial"),
    ({"seed": -1}, "seed"),
    ({"description": None}, "description"),
    ({"fixed": {"seed": 3}}, "seed"),
    ({"fixed": {"holdout_seed": 3}}, "holdout_seed"),
    ({"replicates": 0}, "replicates"),
    ({"replicates": 2.5}, "replicates"),
    ({"equivalence_margin": 0}, "equivalence_margin"),
    ({"refit_steps": "fewer"}, "refit_steps"),
    ({"retune_trials": -1}, "retune_trials"),
    ({"primary_contrast": ["zsharp"]}, "primary_contrast"),
    ({"primary_contrast": ["zsharp", "sgd"]}, "primary_contrast"),
    ({"primary_contrast": ["sam", "sam"]}, "primary_contrast"),
]


@pytest.mark.parametrize("changes, field", BAD_SPACES, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD_SPACES)])
def test_bad_space(changes, field):
    data = {k: v for k, v in {**quickstart_data(), **changes}.items() if v is not DROP}
    with pytest.raises(SpaceError) as err:
        SearchSpace.from_dict(data, "spaces/bad.yaml")
    assert_one_line_error(err, "spaces/bad.yaml", field)


def test_bad_space_built_directly():
    space = get_space("quickstart")
    with pytest.raises(SpaceError) as err:
        SearchSpace(**{**vars(space), "search": {"lr": {"loguniform": [1e-4, 1e-2]}}})
    assert_one_line_error(err, "space 'quickstart'", "search.lr", "Distribution")
    with pytest.raises(SpaceError) as err:
        Distribution("uniform", 0.2, 0.1)
    assert_one_line_error(err, "low < high")


# ---- files ------------------------------------------------------------------------------

HAND_WRITTEN = """
name: hand_written
description: written by hand
dataset: digits
model: res20s
optimizers: [adam, zsharp]
fixed: {<<: {batch_size: 256, schedule: cosine}, batch_size: 128}
search:
  lr: {loguniform: [1e-4, 3E-3]}
  alpha: {uniform: [0.5, 0.99]}
search_per_optimizer:
  zsharp: {rho: {uniform: [5e-2, 0.2]}}
max_epochs: 2.0
grace_period: 1
reduction_factor: 2
trials_per_optimizer: 1
max_concurrent: 1
cpus_per_trial: 1
gpus_per_trial: 0
"""


def test_hand_written_yaml(tmp_path):
    path = tmp_path / "hand.yml"
    path.write_text(HAND_WRITTEN)
    space = load_space_file(path)
    assert space.search["lr"] == Distribution("loguniform", 1e-4, 3e-3)  # 1e-4 is a float here
    assert space.distributions_for("zsharp")["rho"] == Distribution("uniform", 0.05, 0.2)
    assert space.fixed == {"batch_size": 128, "schedule": "cosine"}
    assert space.max_epochs == 2 and type(space.max_epochs) is int
    assert space.seed == 0


BAD_FILES = [
    ("name: [unclosed\n", "not valid YAML at line"),
    ("- quickstart\n- compare_c10\n", "mapping"),
    ("", "mapping"),
    ("name: a\nname: b\n", "name"),
    (HAND_WRITTEN.replace("alpha: {uniform: [0.5, 0.99]}", "alpha: {uniform: [0.5, 1.0]}"), "search.alpha"),
    (HAND_WRITTEN.replace("max_concurrent: 1", "max_concurrent: yes"), "max_concurrent"),
    (b"\xff\xfe name", "cannot read"),
    ("a: " + "[" * 5000 + "]" * 5000, "nested too deeply"),
    ("name: x\nseed: " + "9" * 5000 + "\n", "a value cannot be read: Exceeds the limit (4300 digits)"),
    ("name: x\nwhen: 2026-13-01\n", "a value cannot be read: month must be in 1..12"),
    ("#" * 1_000_001, "larger than 1 MB"),
]


@pytest.mark.parametrize("content, field", BAD_FILES)
def test_bad_file(content, field, tmp_path):
    path = tmp_path / "space.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(SpaceError) as err:
        get_space(str(path))
    assert_one_line_error(err, str(path), field)


def test_only_a_regular_file_is_read_as_a_space(tmp_path):
    # A FIFO would block the reader and /dev/zero never end: both are refused unread, in a
    # child process so that a regression fails the test instead of hanging it.
    fifo = tmp_path / "space.fifo"
    os.mkfifo(fifo)
    for path in (fifo, "/dev/zero", tmp_path):
        done = run_module("launch", "--space", str(path), "--dry-run", timeout=60)
        assert done.returncode == 2 and done.stderr == (
            f"launch.py: error: {path}: not a regular file (a search space is a YAML file)\n")


def test_missing_file(tmp_path):
    path = str(tmp_path / "nowhere.yaml")
    with pytest.raises(SpaceError) as err:
        get_space(path)
    assert_one_line_error(err, path, "No such file")


def test_unknown_space_name_lists_the_names():
    with pytest.raises(SpaceError) as err:
        get_space("compare_c1000")
    assert_one_line_error(err, "'compare_c1000'", *BUILTIN)


# ---- registry ---------------------------------------------------------------------------

def test_register_space_and_factory(monkeypatch):
    space = SearchSpace.from_dict(sgd_space(name="mine"), "test")
    monkeypatch.setattr(registry, "_SPACES", {})
    assert register_space(space) is space

    @register_space
    def mine_small():
        return space.with_overrides(name="mine_small", max_epochs=2)

    assert list_spaces() == ["mine", "mine_small"]
    assert get_space("mine") == space and get_space("mine") is not space
    assert get_space("mine_small").max_epochs == 2
    with pytest.raises(ValueError, match="twice"):
        register_space(space)
