"""GPU check for a lent machine: needs only torch and torchvision (no Ray, MLflow, Optuna).

1. Host syncs: every SAM-family `first_step` + `second_step` on ResNet-20's and VGG16-BN's
   parameters runs under `torch.cuda.set_sync_debug_mode("error")` (any sync raises), and
   one training epoch of `run_trial` runs under "warn" mode; the syncs it makes are counted.
2. ZSharp's threshold: `kthvalue` against `topk` on CUDA for the largest tensors.
3. Throughput: `run_trial` on 50,000 synthetic 32x32 images for res20s, res56s, vgg16_bn
   and vit with adam, sam and zsharp (bf16 autocast, channels_last); images/s of the
   second epoch (the first pays for cuDNN autotuning) and the ZSharp/SAM step-time ratio.
4. Flatness diagnostics (2,048 images, 20 probes) per model, against a ZSharp epoch, and
   how precise their curvature came out (Lanczos residual, trace SE).

    benchmarks/gpu_check.sh            # about 4 minutes on an H100
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from trainables.data import load_dataset
from trainables.flatness import precision, precision_text
from trainables.models import create_model
from trainables.optim import create_optimizer
from trainables.train import TrialConfig, run_trial

SAM_FAMILY = ["sam", "asam", "fsam", "zsharp"]


def fill_grads(model, generator):
    for p in model.parameters():
        p.grad = torch.randn(p.shape, device=p.device, generator=generator)


def check_optimizer_syncs(model_name: str) -> None:
    """Raise if any SAM-family step synchronises with the host."""
    generator = torch.Generator(device="cuda").manual_seed(0)
    for name in SAM_FAMILY:
        model = create_model(model_name, 100).cuda()
        opt = create_optimizer(name, model)
        fill_grads(model, generator)
        opt.first_step()  # warm-up: lazily allocated buffers and base-optimizer state
        opt.second_step()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(3):
                opt.first_step()
                opt.second_step()
        finally:
            torch.cuda.set_sync_debug_mode(0)
        torch.cuda.synchronize()
        print(f"sync-free  {model_name:9s} {name:7s} first_step + second_step: 0 host syncs")


def time_cuda(fn, repeats=50) -> float:
    """Median milliseconds of fn() by CUDA events."""
    times = []
    for _ in range(5):
        fn()
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def compare_selection() -> None:
    """k-th smallest by kthvalue against topk of the largest n-k+1, on CUDA."""
    for n in [36_864, 589_824, 2_359_296, 2 ** 24 + 3]:
        x = torch.rand(n, device="cuda")
        k = int(0.95 * (n - 1)) + 1
        assert torch.equal(torch.kthvalue(x, k).values, torch.topk(x, n - k + 1).values.min())
        kth = time_cuda(lambda: torch.kthvalue(x, k))
        top = time_cuda(lambda: torch.topk(x, n - k + 1).values.min())
        srt = time_cuda(lambda: torch.sort(x).values[k - 1])
        print(f"select n={n:>9,}  kthvalue {kth:7.3f} ms  topk {top:7.3f} ms  sort {srt:7.3f} ms")


def optimizer_step_times(model_name: str) -> None:
    generator = torch.Generator(device="cuda").manual_seed(0)
    model = create_model(model_name, 100).cuda()
    for name in ["adam"] + SAM_FAMILY:
        opt = create_optimizer(name, model)
        fill_grads(model, generator)
        step = opt.step if name == "adam" else (lambda o=opt: (o.first_step(), o.second_step()))
        print(f"opt-step   {model_name:9s} {name:7s} {time_cuda(step):7.3f} ms")


def syncs_during(fn) -> list[str]:
    """Messages of the synchronising CUDA calls that fn() makes."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return [str(w.message) for w in caught if "synchroniz" in str(w.message)]


def count_loop_syncs() -> None:
    """Syncs of one training epoch of run_trial: a 2-epoch run less a 1-epoch run, so
    the set-up (model and data copied to the GPU) cancels out."""
    data = load_dataset("synthetic", num_train=4096, num_val=1024)
    config = TrialConfig(dataset="synthetic", model="res20s", optimizer="zsharp", epochs=1,
                         batch_size=256, warmup_epochs=0, device="cuda")
    run_trial(config, data=data)  # warm-up (cuDNN autotuning, allocator)
    one = syncs_during(lambda: run_trial(config, data=data))
    two = syncs_during(lambda: run_trial(config.replace(epochs=2), data=data))
    steps = 4096 // 256
    print(f"loop-syncs res20s zsharp: {len(two) - len(one)} syncs per epoch of {steps} "
          f"training steps and 4 evaluation batches ({len(one)} in a whole 1-epoch trial)")


def check_cuda_matches_cpu() -> None:
    """ZSharp's perturbation on CUDA (topk selection) equals the CPU one (introselect)."""
    generator = torch.Generator().manual_seed(0)
    offsets = {}
    for device in ["cpu", "cuda"]:
        model = create_model("res20s", 100)
        for p in model.parameters():
            p.data.zero_()
            p.grad = torch.randn(p.shape, generator=generator.manual_seed(p.numel()))
        model.to(device)
        opt = create_optimizer("zsharp", model)
        opt.first_step()
        offsets[device] = [p.detach().cpu() for p in model.parameters()]
    same = all(torch.equal(a != 0, b != 0) for a, b in zip(offsets["cpu"], offsets["cuda"]))
    close = all(torch.allclose(a, b, rtol=1e-4, atol=1e-7)
                for a, b in zip(offsets["cpu"], offsets["cuda"]))
    print(f"zsharp CUDA vs CPU: same kept entries {same}, perturbations allclose {close}")


def check_compiled_training() -> None:
    """torch.compile on inductor, which the CPU suite leaves out (it compiles on aot_eager):
    a SAM trial trains like eager, up to the rounding of fused kernels."""
    data = load_dataset("synthetic", num_train=2048, num_val=512)
    config = TrialConfig(dataset="synthetic", model="res20s", optimizer="sam", epochs=2,
                         batch_size=256, warmup_epochs=0, device="cuda")
    eager = run_trial(config, data=data)
    compiled = run_trial(config.replace(compile=True), data=data)
    ratio = compiled.metrics["train_loss"] / eager.metrics["train_loss"]
    print(f"compile (inductor) vs eager, sam res20s 2 epochs: {compiled.status}, "
          f"train_loss ratio {ratio:.4f} (within 1 +- 0.005 expected)")


def throughput(models, optimizers, epochs: int, num_train: int, device: str) -> None:
    data = load_dataset("synthetic", num_train=num_train, num_val=num_train // 5)
    rows = {}
    for model in models:
        for optimizer in optimizers:
            config = TrialConfig(dataset="synthetic", model=model, optimizer=optimizer,
                                 epochs=epochs, batch_size=256, warmup_epochs=0, device=device)
            started = time.perf_counter()
            result = run_trial(config, data=data)
            rate = result.metrics["images_per_s"]
            rows[model, optimizer] = rate
            print(f"train      {model:9s} {optimizer:7s} {rate:9.0f} img/s  "
                  f"val_acc {result.metrics['val_acc']:.3f}  ({time.perf_counter() - started:.0f}s)",
                  flush=True)
    print(f"\nimages/s (last of {epochs} epochs), batch 256, {num_train:,} synthetic 32x32 images")
    print(f"{'model':10s}" + "".join(f"{o:>10s}" for o in optimizers) + "   zsharp/sam step time")
    for model in models:
        ratio = rows[model, "sam"] / rows[model, "zsharp"]
        print(f"{model:10s}" + "".join(f"{rows[model, o]:10.0f}" for o in optimizers)
              + f"   {ratio:.3f}")


def flatness_costs(models, num_train: int, device: str, **flatness) -> None:
    """The flatness diagnostics (trainables.flatness, as a confirm run ends) per model:
    their seconds against one epoch of ZSharp training on `num_train` synthetic images.
    `flatness`: the diagnostics' settings (TrialConfig's flatness_*; its defaults else)."""
    data = load_dataset("synthetic", num_train=num_train, num_val=num_train // 5)
    for model in models:
        config = TrialConfig(dataset="synthetic", model=model, optimizer="zsharp", epochs=1,
                             batch_size=256, warmup_epochs=0, device=device, **flatness)
        images, probes = config.flatness_images, config.flatness_probes
        run_trial(config.replace(flatness_images=0), data=data)  # warm-up (cuDNN autotuning)
        metrics = run_trial(config, data=data).metrics
        # Training alone (the evaluation of an epoch left out): images over images/s.
        epoch, flat = num_train / metrics["images_per_s"], metrics["flatness_seconds"]
        print(f"flatness   {model:9s} {images:,} images, {probes} probes: {flat:.2f} s = "
              f"{flat / epoch:.2f} epochs of zsharp training ({epoch:.2f} s an epoch of "
              f"{num_train:,} images; {flat / (200 * epoch):.2%} of a 200-epoch run); "
              f"{precision_text(*precision(metrics))}", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--models", default="res20s,res56s,vgg16_bn,vit")
    parser.add_argument("--smoke-test", action="store_true",
                        help="tiny throughput run on any device (CUDA-only checks skipped)")
    args = parser.parse_args(argv)
    if args.smoke_test:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        throughput(["res20s"], ["adam", "sam", "zsharp"], 1, 256, device)
        flatness_costs(["res20s"], 256, device, flatness_images=40, flatness_probes=3,
                       flatness_lanczos_steps=6, flatness_ascent_steps=1)  # the quickstart's
        return
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA GPU here (use --smoke-test on a CPU)")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    for model in ["res20s", "vgg16_bn"]:
        check_optimizer_syncs(model)
    check_cuda_matches_cpu()
    check_compiled_training()
    compare_selection()
    for model in ["res20s", "vgg16_bn"]:
        optimizer_step_times(model)
    count_loop_syncs()
    throughput(args.models.split(","), ["adam", "sam", "zsharp"], args.epochs, 50_000, "cuda")
    flatness_costs(args.models.split(","), 50_000, "cuda", flatness_images=2048)  # the defaults


if __name__ == "__main__":
    main()
