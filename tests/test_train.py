"""One trial end to end on the offline digits data: config, loop, checkpoints, CLI."""

import json
import math

import numpy as np
import pytest
import torch

from trainables.config import TrialConfig
from trainables.batching import num_train_batches
from trainables.data import load_dataset, load_dataset_once
from trainables.errors import ConfigError, check_range
from trainables.lr_schedule import lr_factor
from trainables.train import CHECKPOINT_FILE, EXIT_DIVERGED, main, run_trial, trial_data
from conftest import DIGITS_TRIAL, PUBLISHED, run_module

TIMING = {"epoch_time_s", "images_per_s"}
SMALL = DIGITS_TRIAL


def digits_steps_per_epoch(batch_size=128):
    return num_train_batches(load_dataset("digits"), batch_size)


def without_timing(metrics):
    return {k: v for k, v in metrics.items() if k not in TIMING}


class Recorder(list):
    """A `report` that keeps every epoch's metrics."""

    def __call__(self, metrics):
        self.append(dict(metrics))


# ---- config -----------------------------------------------------------------------------

def test_defaults_are_the_seed_recipe():
    c = TrialConfig()
    assert (c.optimizer, c.base, c.lr, c.weight_decay, c.batch_size, c.epochs) == \
        ("zsharp", "adam", 1e-3, 5e-5, 256, 200)
    assert (c.warmup_epochs, c.schedule, c.rho, c.alpha, c.beta1, c.beta2) == \
        (5, "step", 0.05, 0.95, 0.9, 0.999)


def test_config_dict_round_trip_is_plain_json():
    d = TrialConfig(optimizer="sam", lr=0.01, epochs=3).to_dict()
    assert json.loads(json.dumps(d)) == d
    assert TrialConfig.from_dict(d).to_dict() == d
    assert set(d) == set(TrialConfig.field_names())


@pytest.mark.parametrize("changes, word", [
    (dict(learning_rate=0.1), "learning_rate"),
    (dict(lr=0.0), "lr"),
    (dict(lr=float("nan")), "lr"),
    (dict(lr="fast"), "lr"),
    (dict(epochs=2.5), "epochs"),
    (dict(epochs=0), "epochs"),
    (dict(batch_size=True), "batch_size"),
    (dict(alpha=1.0), "alpha"),
    (dict(rho=-0.01), "rho"),
    (dict(lmbda=2.0), "lmbda"),
    (dict(momentum=1.0), "momentum"),
    (dict(label_smoothing=1.0), "label_smoothing"),
    (dict(schedule="linear"), "schedule"),
    (dict(optimizer="lion"), "optimizer"),
    (dict(model="resnet1000"), "model"),
    (dict(dataset="imagenet"), "dataset"),
    (dict(device="tpu"), "device"),
    (dict(precision="fp8"), "precision"),
    (dict(compile="yes"), "compile"),
    (dict(flatness_probes=1), "flatness_probes"),
    (dict(flatness_lanczos_steps=0), "flatness_lanczos_steps"),
    (dict(flatness_ascent_steps=0), "flatness_ascent_steps"),
])
def test_bad_settings_raise_one_clear_config_error(changes, word):
    with pytest.raises(ConfigError, match=word):
        TrialConfig.from_dict({**TrialConfig().to_dict(), **changes})


@pytest.mark.parametrize("value, bounds, message", [
    (-0.5, dict(low=0), "rho must be a finite number >= 0, got -0.5"),
    (1.0, dict(low=0, high=1, high_open=True), "rho must be a finite number in [0, 1), got 1.0"),
    (0, dict(low=0, low_open=True), "rho must be a finite number > 0, got 0"),
    (3, dict(high=2), "rho must be a finite number <= 2, got 3"),
    (float("nan"), {}, "rho must be a finite number, got nan"),
    (float("inf"), dict(low=0), "rho must be a finite number >= 0, got inf"),
    (True, {}, "rho must be a finite number, got True"),
    ("0.1", {}, "rho must be a finite number, got '0.1'"),
    (2.5, dict(low=1, integral=True), "rho must be a whole number >= 1, got 2.5"),
    (10 ** 400, dict(high=5, integral=True), "rho must be a whole number <= 5, got 1000"),
])
def test_the_range_check_names_the_setting_its_range_and_the_value(value, bounds, message):
    with pytest.raises(ConfigError) as error:
        check_range("rho", value, **bounds)
    assert str(error.value).startswith(message)


def test_the_range_check_returns_the_number_in_its_kind():
    assert check_range("n", 64.0, 1, integral=True) == 64 and type(check_range("n", 64.0, 1, integral=True)) is int
    assert check_range("x", 1, 0, 1) == 1.0 and type(check_range("x", 1, 0, 1)) is float
    assert check_range("n", 10 ** 30, 0, integral=True) == 10 ** 30


def test_every_flag_of_the_trial_command_says_what_it_is_its_default_and_valid_values(capsys):
    from trainables.catalog import all_hparams, list_datasets, list_optimizers

    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    hparams = all_hparams()
    for name, (_, default) in TrialConfig.settings().items():
        assert f"--{name.replace('_', '-')}" in text
        assert name in hparams or f"(default: {default})" in text
    # A hyperparameter's default is its optimizer's: ASAM's rho is not SAM's.
    assert "rho (ascent radius); >= 0 (default: 0.5 for asam; 0.05 for fsam, sam, zsharp)" in text
    assert f"data set (registry name): {', '.join(list_datasets())} (default: digits)" in text
    assert f"optimizer (registry name): {', '.join(list_optimizers())}" in text
    assert "ZSharp alpha (|z| quantile kept above); in [0, 1) (default: 0.95 for zsharp)" in text
    assert text.count("(default:") == len(TrialConfig.settings()) + 1  # and --checkpoint-dir's
    assert len(all_hparams()) == sum(TrialConfig.help(n) == h.describe() for n, h in all_hparams().items())


def test_whole_floats_are_accepted_for_integer_settings():
    # Searchers hand back floats; 64.0 is a valid batch size, stored as an int.
    assert TrialConfig.from_dict({"batch_size": 64.0}).batch_size == 64


# ---- schedule -----------------------------------------------------------------------------

def test_warmup_starts_above_zero_then_steps_down_by_the_seed_factor():
    kw = dict(schedule="step", warmup_steps=10, steps_per_epoch=2, total_steps=200)
    assert lr_factor(0, **kw) == pytest.approx(0.1)
    assert lr_factor(9, **kw) == pytest.approx(1.0)
    assert lr_factor(10, **kw) == 1.0
    assert lr_factor(10 + 30 * 2 - 1, **kw) == 1.0
    assert lr_factor(10 + 30 * 2, **kw) == 0.75
    assert lr_factor(10 + 60 * 2, **kw) == 0.75 ** 2


def test_step_epochs_sets_the_decay_period():
    # The compute-matched arm stretches the schedule: decays every 60 epochs instead of 30.
    kw = dict(schedule="step", warmup_steps=0, steps_per_epoch=2, total_steps=400, step_epochs=60)
    assert lr_factor(60 * 2 - 1, **kw) == 1.0
    assert lr_factor(60 * 2, **kw) == 0.75


def test_cosine_decays_to_zero_at_the_last_step():
    kw = dict(schedule="cosine", warmup_steps=0, steps_per_epoch=5, total_steps=100)
    assert lr_factor(0, **kw) == 1.0
    assert lr_factor(50, **kw) == pytest.approx(0.5)
    assert lr_factor(100, **kw) == pytest.approx(0.0, abs=1e-12)


# ---- splits ----------------------------------------------------------------------------------

def test_a_search_trial_never_holds_the_test_split():
    data = load_dataset("digits")
    search = trial_data(data, TrialConfig(eval_split="val"))
    assert not search.has("test") and search.has("val")
    with pytest.raises(ValueError, match="test"):
        search.split("test")
    assert len(search.train_labels) == len(data.train_labels)


def test_a_replicates_holdout_is_another_stratified_val_of_the_same_size_and_test_stays():
    data = load_dataset("digits")
    own = trial_data(data, TrialConfig(eval_split="test", refit=False))
    assert torch.equal(own.val_images, data.val_images)  # holdout seed 0: the data set's own
    drawn = trial_data(data, TrialConfig(eval_split="test", refit=False, holdout_seed=12345))
    again = trial_data(data, TrialConfig(eval_split="test", refit=False, holdout_seed=12345))
    other = trial_data(data, TrialConfig(eval_split="test", refit=False, holdout_seed=54321))
    assert torch.equal(drawn.val_images, again.val_images)  # fixed by its seed
    assert not torch.equal(drawn.val_images, data.val_images) and not torch.equal(drawn.val_images, other.val_images)
    assert len(drawn.val_labels) == len(data.val_labels) and len(drawn.train_labels) == len(data.train_labels)
    # The same images, split otherwise: train + val is the official training data still.
    pooled = lambda d: sorted(map(bytes, torch.cat([d.train_images, d.val_images]).flatten(1).numpy()))
    assert pooled(drawn) == pooled(data)
    assert torch.equal(drawn.test_images, data.test_images)
    # Stratified: each class's count within 1 of its share of the pool.
    labels = torch.cat([data.train_labels, data.val_labels])
    share = torch.bincount(labels) * len(data.val_labels) / len(labels)
    assert (torch.bincount(drawn.val_labels) - share).abs().max() < 1


def test_a_confirm_run_records_which_test_examples_it_got_right():
    from trainables.schema import decode_correct

    data = load_dataset("digits")
    reports = Recorder()
    config = TrialConfig(**SMALL, optimizer="adam", epochs=2, eval_split="test")
    run_trial(config, reports)
    assert "test_correct" not in reports[0]  # only how the run ends
    correct = decode_correct(reports[-1]["test_correct"])
    assert len(correct) == len(data.test_labels) and correct.mean() == pytest.approx(reports[-1]["test_acc"])
    search = Recorder()
    run_trial(TrialConfig(**SMALL, optimizer="adam", epochs=1), search)
    assert "test_correct" not in search[-1]  # a search trial never sees test


def test_the_test_record_is_compact_and_refused_when_malformed():
    import base64

    from trainables.schema import MAX_TEST_EXAMPLES, decode_correct, encode_correct

    flags = np.random.default_rng(0).random(10_000) < 0.9
    text = encode_correct(flags)
    assert len(text) < 1700 and np.array_equal(decode_correct(text), flags)
    assert np.array_equal(decode_correct(encode_correct([True, False, True])), [True, False, True])
    packed = base64.b64encode(bytes([0b10100001])).decode()
    for bad in (None, 7, "", "3", "x:AAAA", "3:!!!!", f"4:{packed}",  # pad bits set
                f"9:{packed}", f"{MAX_TEST_EXAMPLES + 1}:{packed}", "3:" + "A" * 300_000):
        assert decode_correct(bad) is None, bad


@pytest.mark.parametrize("optimizer", sorted(PUBLISHED))
def test_every_optimizers_trial_default_is_its_published_default(optimizer):
    from trainables.optim import create_optimizer

    config = TrialConfig(optimizer=optimizer)
    assert {name: getattr(config, name) for name in PUBLISHED[optimizer]} == PUBLISHED[optimizer]
    # A direct create_optimizer call that leaves them out gets the same (the class reads its entry).
    group = create_optimizer(optimizer, torch.nn.Linear(2, 2)).param_groups[0]
    assert {n: group[n] for n in PUBLISHED[optimizer]} == PUBLISHED[optimizer]
    assert TrialConfig.defaults(optimizer)["rho"] == PUBLISHED[optimizer]["rho"]
    assert TrialConfig(optimizer=optimizer, rho=0.2).rho == 0.2  # a set value is kept


@pytest.mark.parametrize("refit", [True, False])
def test_a_confirm_run_evaluates_test_and_refits_on_train_plus_val(refit):
    data = load_dataset("digits")
    config = TrialConfig(**SMALL, optimizer="sam", epochs=1, eval_split="test", refit=refit)
    held = trial_data(data, config)
    train = len(data.train_labels) + (len(data.val_labels) if refit else 0)
    assert len(held.train_labels) == train and held.has("val") != refit
    reports = Recorder()
    run_trial(config, reports)
    (m,) = reports
    assert {"test_loss", "test_acc"} <= set(m) and ("val_acc" in m) != refit
    # Gradient evaluations count every image trained on, both passes.
    assert m["grad_evals"] == 2 * (train // 128) * 128


def test_a_worker_reads_a_data_set_once_per_folder_and_its_trials_leave_it_as_it_was(tmp_path):
    """load_dataset_once (what a Ray worker's trials use): the same name and folder give the
    held data set, however the folder is spelt; another folder is read afresh. A search
    trial and a refit confirm run with diagnostics leave its tensors as they were."""
    first = load_dataset_once("digits", tmp_path / "a")
    assert load_dataset_once("digits", str(tmp_path / "a" / ".." / "a")) is first
    held = load_dataset_once("digits", tmp_path / "b")
    assert held is not first and load_dataset_once("digits", tmp_path / "b") is held
    before = {name: tensor.clone() for name, tensor in held._tensors().items()}
    run_trial(TrialConfig(**SMALL, optimizer="sam", epochs=1), data=held)
    run_trial(TrialConfig(**SMALL, optimizer="adam", epochs=1, eval_split="test", refit=True,
                          flatness_images=16, flatness_probes=2, flatness_lanczos_steps=2,
                          flatness_ascent_steps=1), data=held)
    assert held._tensors().keys() == before.keys()
    assert all(torch.equal(held._tensors()[name], tensor) for name, tensor in before.items())


# ---- the loop -------------------------------------------------------------------------------

ZSHARP_EPOCHS = 3


@pytest.fixture(scope="module")
def zsharp_run():
    reports = Recorder()
    config = TrialConfig(**SMALL, optimizer="zsharp", epochs=ZSHARP_EPOCHS)
    return config, reports, run_trial(config, reports)


def test_reports_every_epoch_with_the_promised_metrics(zsharp_run):
    config, reports, result = zsharp_run
    assert result.status == "completed"
    assert [m["epoch"] for m in reports] == list(range(1, ZSHARP_EPOCHS + 1))
    required = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time_s",
                "images_per_s", "grad_evals", "kept_fraction", "ascent_cosine", "perturbation_norm",
                "diverged"}
    for m in reports:
        assert set(m) == required  # a search trial: no test_* metric
        assert 0 <= m["train_acc"] <= 1 and 0 <= m["val_acc"] <= 1
        assert m["images_per_s"] > 0 and m["epoch_time_s"] > 0 and m["diverged"] == 0
    assert result.metrics == reports[-1]
    assert reports[-1]["val_acc"] > 0.3  # learns: chance is 0.1


def test_grad_evals_count_both_passes_of_a_sam_family_step(zsharp_run):
    _, reports, _ = zsharp_run
    steps = digits_steps_per_epoch()
    assert [m["grad_evals"] for m in reports] == [2 * e * steps * 128 for e in range(1, ZSHARP_EPOCHS + 1)]


def test_zsharp_kept_fraction_matches_its_quantile(zsharp_run):
    # Distinct gradient values: each filtered tensor keeps n - floor(alpha (n-1)) - 1 entries.
    from trainables.models import create_model
    model = create_model("res20s", 10, in_channels=1, image_size=8)
    filtered = [p.numel() for p in model.parameters() if p.ndim > 1]
    expected = sum(n - math.floor(0.95 * (n - 1)) - 1 for n in filtered) / sum(filtered)
    _, reports, _ = zsharp_run
    for m in reports:
        assert m["kept_fraction"] == pytest.approx(expected, abs=2e-3)


def test_reported_lr_follows_the_schedule_on_the_base_optimizer(zsharp_run):
    config, reports, _ = zsharp_run
    steps = digits_steps_per_epoch()
    for m in reports:
        last_step = m["epoch"] * steps - 1
        expected = config.lr * lr_factor(last_step, schedule="step", warmup_steps=steps,
                                         steps_per_epoch=steps, total_steps=ZSHARP_EPOCHS * steps)
        assert m["lr"] == pytest.approx(expected)


def test_same_config_and_seed_give_identical_metrics(zsharp_run):
    config, reports, _ = zsharp_run
    again = Recorder()
    run_trial(config.to_dict(), again)
    assert [without_timing(m) for m in again] == [without_timing(m) for m in reports]
    other_seed = Recorder()
    run_trial(config.replace(seed=7, epochs=1), other_seed)
    assert without_timing(other_seed[0]) != without_timing(reports[0])


@pytest.mark.parametrize("optimizer", ["sam", "sgd"])
def test_stopped_after_two_epochs_and_resumed_equals_an_uninterrupted_run(tmp_path, optimizer):
    config = TrialConfig(**SMALL, optimizer=optimizer, base="sgd", momentum=0.9, epochs=4,
                         schedule="cosine")
    uninterrupted = Recorder()
    run_trial(config, uninterrupted)

    class Crash(Exception):
        pass

    first = Recorder()

    def crash_after_two(metrics):
        first(metrics)
        if metrics["epoch"] == 2:
            raise Crash  # the worker dies right after reporting epoch 2

    with pytest.raises(Crash):
        run_trial(config, crash_after_two, tmp_path)
    resumed = Recorder()
    result = run_trial(config, resumed, tmp_path)
    assert [m["epoch"] for m in resumed] == [3, 4]
    assert [without_timing(m) for m in first + resumed] == \
        [without_timing(m) for m in uninterrupted]
    assert result.metrics == resumed[-1]
    # A finished trial returns its result without training again.
    finished = Recorder()
    assert run_trial(config, finished, tmp_path).metrics == result.metrics
    assert finished == []


def test_checkpoint_holds_everything_and_bn_counts_one_pass_per_step(tmp_path):
    config = TrialConfig(**SMALL, optimizer="sam", epochs=1)
    run_trial(config, None, tmp_path)
    state = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    assert {"model", "optimizer", "scheduler", "rng", "epoch", "config"} <= set(state)
    assert state["epoch"] == 1 and state["config"] == config.to_dict()
    tracked = [v for k, v in state["model"].items() if k.endswith("num_batches_tracked")]
    # BatchNorm statistics move in the first pass only: once per step, not twice.
    assert tracked and all(int(t) == digits_steps_per_epoch() for t in tracked)


def test_the_checkpoint_size_bound_holds_for_every_optimizer_and_is_tight(tmp_path):
    # What the sweep's storage check counts on (tune.diskspace): a real checkpoint of each
    # registered optimizer after a step, against the bound computed from the model alone.
    from trainables.catalog import list_optimizers
    from trainables.train import checkpoint_bytes

    bound = checkpoint_bytes("res8s", load_dataset("digits"))
    sizes = {}
    for optimizer in list_optimizers():
        folder = tmp_path / optimizer
        run_trial({**SMALL, "model": "res8s", "optimizer": optimizer, "epochs": 1, "device": "cpu"}, None, folder)
        sizes[optimizer] = (folder / CHECKPOINT_FILE).stat().st_size
    assert max(sizes.values()) <= bound < 1.25 * max(sizes.values()), (bound, sizes)


def test_a_damaged_checkpoint_or_a_file_for_a_folder_is_one_config_error(tmp_path):
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot be read"):
        run_trial(TrialConfig(**SMALL, optimizer="adam", epochs=1), None, tmp_path)
    with pytest.raises(ConfigError, match="is a file"):
        run_trial(TrialConfig(**SMALL, optimizer="adam", epochs=1), None, tmp_path / CHECKPOINT_FILE)
    with pytest.raises(ConfigError, match="mps"):
        run_trial(TrialConfig(**SMALL, optimizer="adam", epochs=1, device="mps"))


def test_checkpoint_of_another_trial_is_refused(tmp_path):
    run_trial(TrialConfig(**SMALL, optimizer="adam", epochs=1), None, tmp_path)
    with pytest.raises(ConfigError, match="optimizer"):
        run_trial(TrialConfig(**SMALL, optimizer="sam", epochs=2), None, tmp_path)


def test_an_absurd_learning_rate_ends_diverged_with_a_last_report(tmp_path):
    reports = Recorder()
    config = TrialConfig(**{**SMALL, "lr": 1e12, "warmup_epochs": 0}, optimizer="sgd",
                         momentum=0.9, epochs=5)
    result = run_trial(config, reports, tmp_path)
    assert result.status == "diverged"
    assert len(reports) < 5 and reports[-1]["diverged"] == 1.0
    assert not math.isfinite(reports[-1]["train_loss"])
    # Resuming a diverged trial does not train it again.
    assert run_trial(config, Recorder(), tmp_path).status == "diverged"
    # The command line says so in its exit status.
    argv = [f"--{k}={v}" for k, v in config.to_dict().items() if not isinstance(v, bool)]
    assert main([*argv, "--checkpoint-dir", str(tmp_path)]) == EXIT_DIVERGED == 3


# ---- command line ---------------------------------------------------------------------------

def run_cli(*args, cwd=None):
    return run_module("trainables.train", *args, cwd=cwd, timeout=300)


def test_cli_prints_one_line_per_epoch():
    done = run_cli("--dataset", "digits", "--model", "res20s", "--optimizer", "zsharp",
                   "--epochs", "2", "--batch-size", "256", "--warmup_epochs", "1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[1] for line in lines[:2]] == ["1/2", "2/2"]
    assert lines[-1].startswith("completed")


BAD_FLAGS = [
    (["--lr", "-1"], "lr"),
    (["--lr", "abc"], "--lr"),
    (["--bogus", "1"], "--bogus"),
    (["--optimizer", "lion"], "lion"),
    (["--epochs", "0"], "epochs"),
    (["--dataset", "c10", "--data-dir", "{tmp}"], "cifar-10"),
]


@pytest.mark.parametrize("args, word", BAD_FLAGS)
def test_cli_bad_input_gives_one_line_and_exit_2(tmp_path, capsys, args, word):
    try:
        status = main([a.format(tmp=tmp_path) for a in args])
    except SystemExit as stop:  # argparse's own errors
        status = stop.code
    assert status == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and word in lines[0]


def test_cli_bad_input_from_a_real_process_has_no_traceback(tmp_path):
    done = run_cli("--dataset", "c10", "--data-dir", str(tmp_path))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cifar-10" in lines[0] and "Traceback" not in done.stderr


def test_compiled_model_trains_like_eager_and_keeps_the_bn_freeze(tmp_path, monkeypatch):
    # torch.compile on the aot_eager backend (about 5 s; inductor's C++ build takes a
    # minute or more on CPU): dynamo and AOTAutograd, which inductor also runs first, trace
    # the forward, the backward and BatchNorm's buffer updates; only inductor's
    # decompositions and code generation are skipped. The same training losses as eager,
    # the checkpoint holds the plain model's weights, and BatchNorm statistics still move
    # once per SAM step (the compiled graph honours frozen_bn_stats in the second pass
    # rather than baking in the first).
    graphs = []

    def aot_eager(graph, example_inputs):  # counts the graphs dynamo hands the backend
        graphs.append(graph)
        return torch._dynamo.lookup_backend("aot_eager")(graph, example_inputs)

    monkeypatch.setattr("trainables.train.COMPILE_BACKEND", aot_eager)
    config = TrialConfig(**SMALL, optimizer="sam", epochs=1)
    eager = run_trial(config)
    compiled = run_trial(config.replace(compile=True), None, tmp_path)
    assert compiled.status == "completed" and graphs  # compiled indeed: the losses cannot tell
    # aot_eager fuses nothing, so it runs eager's kernels: the losses were equal when
    # measured (inductor's fused kernels differ by about 1e-3 here, as eager on 1 or 2
    # threads does); the margin leaves room for a reordered reduction.
    assert compiled.metrics["train_loss"] == pytest.approx(eager.metrics["train_loss"], rel=1e-5)
    assert math.isfinite(compiled.metrics["val_loss"])
    state = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    assert not any(k.startswith("_orig_mod") for k in state["model"])
    tracked = [v for k, v in state["model"].items() if k.endswith("num_batches_tracked")]
    assert tracked and all(int(t) == digits_steps_per_epoch() for t in tracked)


def test_the_epoch_estimate_is_near_a_real_epochs_time():
    """The dry run's estimate (a few timed steps, scaled) against run_trial's own epoch
    time for the same config, in the same process: within a factor of 3 either way."""
    from trainables.train import epoch_seconds

    data = load_dataset("digits", "data")
    config = {**DIGITS_TRIAL, "optimizer": "sam", "epochs": 2, "eval_split": "val", "device": "cpu"}
    estimate = epoch_seconds(config, data)
    epochs = []
    run_trial(config, report=epochs.append, data=data)
    actual = epochs[-1]["epoch_time_s"]  # the second epoch: warmed up, as the estimate is
    assert actual / 3 < estimate < actual * 3, (estimate, actual)


def test_a_run_with_flatness_reports_it_with_its_last_epoch_and_keeps_it_on_resume(tmp_path, monkeypatch):
    from trainables import flatness
    from trainables.schema import FLATNESS_METRICS, LOSS_PROFILE

    config = {**DIGITS_TRIAL, "optimizer": "sam", "epochs": 2, "eval_split": "test", "device": "cpu",
              "flatness_images": 32,
              "flatness_probes": 2, "flatness_lanczos_steps": 3, "flatness_ascent_steps": 1,
              "flatness_radius": 0.1}
    settings, measure = [], flatness.measure
    monkeypatch.setattr(flatness, "measure", lambda *args, **kwargs: settings.append(kwargs) or measure(*args, **kwargs))
    epochs = []
    result = run_trial(config, report=epochs.append, checkpoint_dir=tmp_path)
    assert settings == [dict(radius=0.1, probes=2, lanczos_steps=3, directions=2, ascent_steps=1)]
    assert not set(FLATNESS_METRICS) & set(epochs[0])  # the last epoch only
    last = epochs[-1]
    assert set(FLATNESS_METRICS) <= set(last) and last["sharpness_radius"] == 0.1
    assert last["hessian_trace_se"] >= 0 and last["sharpness_worst"] >= 0
    assert [t for t, _ in last[LOSS_PROFILE]] == pytest.approx([i / 10 - 1 for i in range(21)])
    again = run_trial(config, checkpoint_dir=tmp_path)  # finished: from its checkpoint
    assert again.metrics == result.metrics == last
