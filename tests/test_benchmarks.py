"""The benchmark scripts run and print their figures; ZSharp's ascent beats the seed's.

Each script's `--smoke-test` runs as a subprocess with this interpreter from the
repository root, as a user would run it (about 50 s together on 2 CPU cores, most of it
gpu_check's three tiny trials). Only that the figures are there and are sane numbers is
checked: their values depend on the machine, except the one ratio the slow test bounds.
"""

import importlib.util
import math
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from trainables.models import create_model

ROOT = Path(__file__).resolve().parents[1]
NUMBER = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|inf|nan)"  # what the scripts print for a float


def run_smoke_test(script: str) -> str:
    """stdout of `script --smoke-test`, after checking it exited with status 0."""
    # The scripts import `trainables`; the root on the path makes that work without the
    # editable install too.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--smoke-test"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{script} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def figure(pattern: str, text: str) -> float:
    """The number captured by `pattern` in `text`, checked positive and finite."""
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"no line matching {pattern!r} in:\n{text}"
    value = float(match.group(1))
    assert math.isfinite(value) and value > 0, f"{pattern!r}: {value} is not a positive finite number"
    return value


def test_train_throughput_smoke_prints_rates_and_ratios():
    out = run_smoke_test("train_throughput.py")
    for pipeline in ("run_trial", "minimal", "dataloader"):
        figure(rf"^{pipeline}\s+({NUMBER})\s", out)  # median images/s
    figure(rf"^run_trial / minimal = ({NUMBER}) ", out)
    figure(rf"^run_trial / dataloader = ({NUMBER}) ", out)
    assert re.search(r"^load average \(1 min\) at end: \d", out, re.MULTILINE), out


def test_command_times_smoke_prints_each_launch_command_with_its_target():
    out = run_smoke_test("command_times.py")
    for name, target in (("launch --help", "0.5"), ("launch --list-spaces", "0.5"), ("launch --dry-run", "1.5")):
        figure(rf"^{name}\s+({NUMBER})\s+{NUMBER}\s+{re.escape(target)}$", out)


def test_flatness_cost_smoke_prints_the_ratio_of_diagnostics_to_training():
    out = run_smoke_test("flatness_cost.py")
    assert figure(rf"^adam .*training ({NUMBER}) s", out) > 0
    assert figure(rf"^adam .*diagnostics \(16 images, 2 probes\) ({NUMBER}) s", out) > 0
    assert figure(rf"^adam .* s: ({NUMBER})% of training", out) > figure(rf"% of training, ({NUMBER})% of the run", out)
    assert figure(rf"^all +ratio ({NUMBER}), highest", out) > 0
    assert figure(rf"^all .*, highest ({NUMBER}) \(adam\) \(target <= 0.1 of each run", out) > 0


def test_optim_step_smoke_prints_table_and_key_figure():
    out = run_smoke_test("optim_step.py")
    assert "torch.allclose = True" in out, out
    models = re.findall(r"^(\w+): \d+ tensors", out, re.MULTILINE)
    assert models == ["res20s"], out  # the smoke test times ResNet-20 only
    for variant in ("adam", "sam", "zsharp", "zsharp-seed"):
        figure(rf"^{variant}\s+(?:-|{NUMBER})\s+({NUMBER})\s", out)  # full step, microseconds
    figure(rf"^key: zsharp first_step / zsharp-seed first_step = ({NUMBER}) ", out)
    figure(r"^kernel launches per first_step .*: sam (\d+), .* zsharp (\d+)$", out)


def test_gpu_check_smoke_prints_throughput_table():
    out = run_smoke_test("gpu_check.py")
    lines = out.splitlines()
    header = next((i for i, line in enumerate(lines) if "zsharp/sam step time" in line), None)
    assert header is not None, out
    optimizers = lines[header].split()[1:-3]  # "model", the optimizers, "zsharp/sam step time"
    assert optimizers == ["adam", "sam", "zsharp"], lines[header]
    row = lines[header + 1].split()
    assert row[0] == "res20s" and len(row) == len(optimizers) + 2, lines[header + 1]
    for cell in row[1:]:  # images/s per optimizer, then the step-time ratio
        figure(rf"({NUMBER})", cell)
    assert figure(rf"^flatness +res20s +48 images, 2 probes: ({NUMBER}) s", out) > 0


def load_optim_step():
    """benchmarks/optim_step.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("optim_step", ROOT / "benchmarks" / "optim_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_zsharp_first_step_faster_than_seed_style():
    """Measured now, in this process: both variants timed interleaved on the same gradients.

    The benchmark's target is 0.5 (currently about 0.36-0.40 on 2 cores); 0.8 leaves room
    for a busy machine while still failing if the speed-up is lost. About 2 s on a quiet
    machine, tens of seconds when other processes fill the cores.
    """
    bench = load_optim_step()
    timings = bench.run_benchmark("res20s", rounds=12, warmup=2)
    ratio = (statistics.median(timings["zsharp"]["first_step"])
             / statistics.median(timings[bench.SEED_VARIANT]["first_step"]))
    assert ratio < 0.8, f"zsharp first_step / {bench.SEED_VARIANT} first_step = {ratio:.3f}"


def test_zsharp_launches_grow_with_distinct_sizes_not_with_depth():
    """The launch figure, on two depths of one network: ResNet-56 has 167 parameter tensors
    to ResNet-20's 59, with the same 7 sizes among the filtered (ndim > 1) ones."""
    bench = load_optim_step()
    launches = {(m, o): bench.count_launches(m, o)
                for m in ("res20s", "res56s") for o in ("sam", "zsharp")}
    sizes = {m: len({p.numel() for p in create_model(m, 10).parameters() if p.ndim > 1})
             for m in ("res20s", "res56s")}
    assert sizes == {"res20s": 7, "res56s": 7}
    assert launches["res56s", "zsharp"] == launches["res20s", "zsharp"], launches
    assert launches["res56s", "sam"] == launches["res20s", "sam"], launches
    # Per distinct size: a mean, a topk and its min or max; the rest runs on the whole buffer,
    # and 9 more give the ascent's cosine with SAM's (a dot per layout, the unfiltered
    # tensors' norms, the quotient: measured 57 -> 66 launches).
    extra = launches["res20s", "zsharp"] - launches["res20s", "sam"]
    assert extra <= 3 * sizes["res20s"] + 30 + 9, launches
