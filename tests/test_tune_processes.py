"""tune/ as processes see it: the --sample command, several processes opening one fresh
MLflow store, and Ray's experiment snapshots on storage (a real Ray in a subprocess)."""

import json
import math
import subprocess
import sys
import time

import numpy as np

from conftest import ENV, ROOT
from search_spaces import get_space


def test_sample_command_prints_each_optimizers_prior_as_json_lines():
    done = subprocess.run([sys.executable, str(ROOT / "launch.py"), "--space", "quickstart",
                           "--sample", "300"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    configs = [json.loads(line) for line in done.stdout.splitlines()]
    space = get_space("quickstart")
    assert len(configs) == 300 * len(space.optimizers)
    zsharp = [c for c in configs if c["optimizer"] == "zsharp"]
    share = math.log(10) / math.log(50)
    assert abs(np.mean([c["alpha"] >= 0.9 for c in zsharp]) - share) < 4 * math.sqrt(share * (1 - share) / 300)
    # lr log-uniform on [3e-3, 0.3]: half the draws below the geometric mean 3e-2.
    lrs = np.array([c["lr"] for c in configs])
    assert lrs.min() >= 3e-3 and lrs.max() <= 0.3
    assert abs((lrs < 3e-2).mean() - 0.5) < 4 * math.sqrt(0.25 / len(lrs))
    assert all(set(c) - set(space.base_config(c["optimizer"])) == set(space.distributions_for(c["optimizer"]))
               for c in configs)


_REFUSED = """
import sys
import launch
code = launch.main(sys.argv[1:])
print(sorted(m for m in ("torch", "ray", "mlflow", "optuna") if m in sys.modules))
sys.exit(code)
"""


def test_a_sweep_this_machine_cannot_run_is_refused_before_torch_or_ray_is_imported(tmp_path):
    # A trial asking for a GPU, every GPU hidden; and storage that cannot be written.
    env = {**ENV, "CUDA_VISIBLE_DEVICES": "-1"}
    for args, says in ((["--space", "zsharp_c100", "--storage", str(tmp_path / "r")], "this machine has none"),
                       (["--space", "quickstart", "--storage", "/proc/sweep"], "not writable")):
        done = subprocess.run([sys.executable, "-c", _REFUSED, *args], capture_output=True, text=True,
                              timeout=120, cwd=ROOT, env=env)
        assert done.returncode == 2 and says in done.stderr and len(done.stderr.splitlines()) == 1
        assert done.stdout.strip() == "[]"  # none of the heavy imports


_OPEN_STORE = """
import sys, time
from pathlib import Path
from tune.store import prepare_store
Path(sys.argv[3]).touch()  # imported: ready
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.01)
prepare_store(sys.argv[1])
"""


def test_processes_opening_one_fresh_store_at_once_all_succeed(tmp_path):
    # Unlocked, MLflow's schema migration races ("table already exists": seen with three
    # processes); prepare_store creates and migrates the store under a file lock. The
    # processes start migrating at one moment, once every one has imported.
    uri, go = f"sqlite:///{tmp_path / 'store.db'}", tmp_path / "go"
    ready = [tmp_path / f"ready{i}" for i in range(4)]
    processes = [subprocess.Popen([sys.executable, "-c", _OPEN_STORE, uri, str(go), str(r)], cwd=ROOT,
                                  stderr=subprocess.PIPE, text=True) for r in ready]
    deadline = time.monotonic() + 120
    while not all(r.exists() for r in ready) and time.monotonic() < deadline:
        assert all(p.poll() is None for p in processes), processes[0].communicate()[1][-2000:]
        time.sleep(0.05)
    go.touch()
    for process in processes:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err[-2000:]


_SNAPSHOT_PROBE = '''
import glob, json, os, sys, tempfile, threading, time
import ray
from ray import tune
from ray.tune.experiment.trial import Trial
from tune.schedule import SafeSnapshots

storage = sys.argv[1]

def trial(config):
    for i in range(12):
        with tempfile.TemporaryDirectory() as d:
            open(os.path.join(d, "w"), "w").write(str(i))
            tune.report({"i": i}, checkpoint=tune.Checkpoint.from_directory(d))

def named(text):
    # each trial's latest checkpoint in one snapshot, read as Tune's restore reads it
    paths = []
    for trial_json, metadata_json in json.loads(text)["trial_data"]:
        t = Trial.from_json_state(trial_json, stub=True)
        t.restore_run_metadata(metadata_json)
        paths += [t.checkpoint.path] if t.checkpoint else []
    return paths

checks, stale, done = [0], [], threading.Event()
def poll():
    while not done.is_set():
        files = sorted(glob.glob(f"{storage}/exp/experiment_state-*.json"))
        try:
            text = open(files[-1]).read() if files else ""
            paths = named(text) if text else []
        except (ValueError, OSError, KeyError):
            continue  # a copy in progress
        missing = [p for p in paths if not os.path.isdir(p)]
        checks[0] += bool(paths)
        # stale only if that snapshot is still the one on storage after the miss
        if missing and open(files[-1]).read() == text:
            stale.append(missing)
        time.sleep(0.002)

ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
poller = threading.Thread(target=poll)
poller.start()
tune.Tuner(tune.with_resources(trial, {"cpu": 1}),
           tune_config=tune.TuneConfig(num_samples=3, max_concurrent_trials=2, scheduler=SafeSnapshots()),
           run_config=tune.RunConfig(name="exp", storage_path=storage, verbose=0,
                                     checkpoint_config=tune.CheckpointConfig(num_to_keep=None))).fit()
done.set()
poller.join()
ray.shutdown()
kept = sorted(len(glob.glob(f"{folder}/checkpoint_*")) for folder in glob.glob(f"{storage}/exp/trial_*"))
print(json.dumps({"checks": checks[0], "stale": stale[:3], "kept": kept}))
'''


def test_the_snapshot_on_storage_never_names_a_deleted_checkpoint(tmp_path):
    # A driver killed at any moment leaves storage's newest snapshot for --resume. With
    # Tune's own pruning (num_to_keep=2: delete N-2 on registering N, snapshots copied to
    # storage in the background) this probe catches ~25 moments in a run where that
    # snapshot names a deleted checkpoint (CI's kill test failed on exactly that).
    # Three trials of 12 quick checkpoints each, the storage polled every ~2 ms (~12 s);
    # each trial ends with its two newest checkpoints.
    probe = subprocess.run([sys.executable, "-c", _SNAPSHOT_PROBE, str(tmp_path)], cwd=ROOT,
                           env=ENV, capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr[-3000:]
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    assert seen["checks"] > 100 and seen["stale"] == [] and seen["kept"] == [2, 2, 2], seen
