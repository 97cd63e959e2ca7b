"""The SAM family (SAM, ASAM, Friendly-SAM, ZSharp) and `create_optimizer`; the registry
that names them (and re-exported here) is trainables.catalog, which needs no torch.

Each variant is one small class in the davda54/sam shape: it wraps a base optimizer,
`first_step` adds an ascent perturbation e to the weights, `second_step` restores the
weights exactly and steps the base optimizer with the gradient taken at w + e. The
classes differ only in how e is computed (exact rules: shared/notes/sam_family.md).

A SAM-family step costs two forward/backward passes ("twice as slow" as its base);
`get_optimizer_info(name).passes_per_step` says so for budgets and reports.

Speed: `first_step` and `second_step` never synchronise with the host (no `.item()`,
no Python branch on a tensor value); element-wise work uses `torch._foreach_*` (one
multi-tensor kernel per operation on CUDA instead of one per parameter), and ZSharp
finds its quantile by selection (introselect on CPU, `topk` on CUDA) instead of a full
sort, filtering all its tensors in one flat buffer: its kernel launches grow with the
number of distinct tensor sizes, not with depth.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from trainables.catalog import (BaseOptimizer, OptimizerInfo, all_hparams, get_base, get_optimizer_info,
                                hparams_of, list_bases, list_optimizers, optimizer_kwargs,
                                register_optimizer, resolve)

__all__ = [
    "SAM",
    "ASAM",
    "FriendlySAM",
    "ZSharp",
    "SAMFamily",
    "OptimizerInfo",
    "BaseOptimizer",
    "all_hparams",
    "create_optimizer",
    "get_base",
    "hparams_of",
    "list_bases",
    "optimizer_kwargs",
    "register_optimizer",
    "get_optimizer_info",
    "list_optimizers",
    "frozen_bn_stats",
]


def _global_norm(tensors: list[Tensor]) -> Tensor:
    """L2 norm over all entries of all tensors, as a 0-d tensor (no host sync).

    fp16/bf16 norms accumulate in float32; float32 and float64 are not converted (a
    conversion would copy every gradient).
    """
    if not tensors:
        return torch.zeros(())
    half = any(t.dtype in (torch.float16, torch.bfloat16) for t in tensors)
    norms = torch._foreach_norm(tensors, 2, dtype=torch.float32 if half else None)
    device = tensors[0].device
    wide = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
    return torch.linalg.vector_norm(torch.stack([n.to(device, wide) for n in norms]))


class SAMFamily(torch.optim.Optimizer):
    """Two-pass sharpness-aware step around a base optimizer.

    Usage (davda54/sam):
        loss_fn(model(x), y).backward()
        opt.first_step(zero_grad=True)          # w <- w + e
        with frozen_bn_stats(model):
            loss_fn(model(x), y).backward()     # gradient at w + e
        opt.second_step(zero_grad=True)         # w restored, base step

    Subclasses implement `_perturbations`. Attach LR schedulers to `base_optimizer`; its
    param_groups are this optimizer's param_groups (one set of dicts), so hparams such as
    rho can be changed per group at run time.
    """

    def __init__(self, params, base_optimizer: type[torch.optim.Optimizer],
                 own_defaults: dict, base_kwargs: dict):
        registered = all_hparams()  # the valid ranges, as the registry states them
        for name, value in own_defaults.items():
            if name in registered:
                registered[name].check(value)
        super().__init__(params, {**own_defaults, **base_kwargs})
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)
        # Weights before the ascent, one reused buffer per parameter. Kept out of
        # `self.state` so checkpoints do not carry a second copy of the model.
        self._origin: dict[Tensor, Tensor] = {}
        self._perturbed: tuple[list[Tensor], list[Tensor]] = ([], [])
        # 0-d device tensors describing the last ascent: `perturbation_norm` (||e|| over
        # every perturbed entry) and a variant's own (ZSharp's kept fraction). Reading them
        # syncs, so the training loop accumulates them and reads once per epoch.
        self.last_ascent_stats: dict[str, Tensor] = {}

    def _groups_with_grads(self) -> list[tuple[dict, list[Tensor], list[Tensor]]]:
        groups = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            groups.append((group, params, [p.grad for p in params]))
        return groups

    def _perturbations(self, groups) -> list[list[Tensor]]:
        """e for every parameter with a gradient, one list per group."""
        raise NotImplementedError

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Move every parameter with a gradient to w + e (the ascent step)."""
        groups = self._groups_with_grads()
        perturbations = self._perturbations(groups)
        params = [p for _, group_params, _ in groups for p in group_params]
        offsets = [e for group_e in perturbations for e in group_e]
        origins = [self._origin_buffer(p) for p in params]
        if params:
            torch._foreach_copy_(origins, params)
            torch._foreach_add_(params, offsets)
            # One multi-tensor norm (about 3 kernels), no sync: the radius the ascent used.
            self.last_ascent_stats["perturbation_norm"] = _global_norm(offsets)
        self._perturbed = (params, origins)
        if zero_grad:
            self.zero_grad()

    def _origin_buffer(self, p: Tensor) -> Tensor:
        buffer = self._origin.get(p)
        if buffer is None:
            buffer = self._origin[p] = torch.empty_like(p)
        return buffer

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore the weights saved by `first_step` bit for bit, then step the base optimizer."""
        params, origins = self._perturbed
        if params:
            torch._foreach_copy_(params, origins)
        self._perturbed = ([], [])
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        """Full step; the gradient at w must already be in `.grad`.

        `closure` must zero nothing and recompute the loss and its gradients (it is called
        at w + e); returns its loss.
        """
        if closure is None:
            raise ValueError(f"{type(self).__name__}.step needs a closure that recomputes the "
                             "loss and gradients, or call first_step/second_step")
        self.first_step(zero_grad=True)
        with torch.enable_grad():
            loss = closure()
        self.second_step()
        return loss

    def state_dict(self) -> dict:
        """Own state (e.g. F-SAM momentum) and the base optimizer's state."""
        return {"ascent": super().state_dict(), "base": self.base_optimizer.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        """Inverse of `state_dict`; keeps the param_groups shared with the base optimizer."""
        super().load_state_dict(state_dict["ascent"])
        self.base_optimizer.load_state_dict(state_dict["base"])
        self.param_groups = self.base_optimizer.param_groups


class SAM(SAMFamily):
    """SAM (Foret et al. 2021): e = rho * g / ||g||, ||g|| over all parameters."""

    def __init__(self, params, base_optimizer=torch.optim.Adam, rho: float = 0.05, **base_kwargs):
        super().__init__(params, base_optimizer, dict(rho=rho), base_kwargs)

    def _perturbations(self, groups):
        all_grads = [g for _, _, grads in groups for g in grads]
        grad_norm = _global_norm(all_grads)
        return [torch._foreach_mul(grads, group["rho"] / (grad_norm + 1e-12)) if grads else []
                for group, _, grads in groups]


class ASAM(SAMFamily):
    """Adaptive SAM (Kwon et al. 2021): e = rho * T^2 g / ||T g||.

    T = |w| + eta in groups with `adaptive=True` (weights) and T = 1 elsewhere (biases);
    `create_optimizer("asam", model)` builds the two groups from parameter names.
    """

    def __init__(self, params, base_optimizer=torch.optim.Adam, rho: float = 0.5,
                 eta: float = 0.01, adaptive: bool = True, **base_kwargs):
        super().__init__(params, base_optimizer, dict(rho=rho, eta=eta, adaptive=adaptive),
                         base_kwargs)

    @staticmethod
    def param_groups_by_name(named_parameters: Iterable[tuple[str, Tensor]]) -> list[dict]:
        """Groups for ASAM: names ending in "weight" (norm weights too) are adaptive."""
        weights, others = [], []
        for name, p in named_parameters:
            if p.requires_grad:
                (weights if name.endswith("weight") else others).append(p)
        groups = [{"params": weights, "adaptive": True}, {"params": others, "adaptive": False}]
        return [g for g in groups if g["params"]]

    def _perturbations(self, groups):
        scaled_grads, scales = [], []
        for group, params, grads in groups:
            if group["adaptive"] and params:
                scale = torch._foreach_abs(params)
                torch._foreach_add_(scale, group["eta"])
                scaled_grads.append(torch._foreach_mul(scale, grads))
                scales.append(scale)
            else:
                scaled_grads.append(grads)
                scales.append(None)
        norm = _global_norm([t for group_t in scaled_grads for t in group_t])
        perturbations = []
        for (group, _, _), tg, scale in zip(groups, scaled_grads, scales):
            e = torch._foreach_mul(tg, scale) if scale is not None else list(tg)
            if e:
                e = torch._foreach_mul(e, group["rho"] / (norm + 1e-16))
            perturbations.append(e)
        return perturbations


class FriendlySAM(SAMFamily):
    """Friendly-SAM (Li et al. CVPR 2024): the ascent removes the gradient's running mean.

    d = g - sigma * m_prev, m = lmbda * m_prev + (1 - lmbda) * g, e = rho * d / ||d||; on a
    parameter's first step m = g and d = g. m lives in `self.state` (checkpointed).
    """

    def __init__(self, params, base_optimizer=torch.optim.Adam, rho: float = 0.05,
                 sigma: float = 1.0, lmbda: float = 0.9, **base_kwargs):
        super().__init__(params, base_optimizer, dict(rho=rho, sigma=sigma, lmbda=lmbda),
                         base_kwargs)

    def _directions(self, group, params, grads) -> list[Tensor]:
        directions = list(grads)
        seen = [i for i, p in enumerate(params) if "momentum" in self.state[p]]
        for i, p in enumerate(params):
            if "momentum" not in self.state[p]:
                self.state[p]["momentum"] = grads[i].clone()
        if seen:
            momenta = [self.state[params[i]]["momentum"] for i in seen]
            seen_grads = [grads[i] for i in seen]
            for i, d in zip(seen, torch._foreach_add(seen_grads, momenta, alpha=-group["sigma"])):
                directions[i] = d
            torch._foreach_mul_(momenta, group["lmbda"])
            torch._foreach_add_(momenta, seen_grads, alpha=1 - group["lmbda"])
        return directions

    def _perturbations(self, groups):
        directions = [self._directions(*g) for g in groups]
        norm = _global_norm([d for group_d in directions for d in group_d])
        return [torch._foreach_mul(d, group["rho"] / (norm + 1e-12)) if d else []
                for (group, _, _), d in zip(groups, directions)]


def kth_smallest_by_partition(values: Tensor, k: int) -> Tensor:
    """k-th smallest entry (1-based) of each row of a CPU B x n tensor, as B x 1.

    numpy's introselect, O(n): 5-7x faster than torch.kthvalue here (rows of 432 to
    36,864 entries, 2 cores), and a full sort is 7-10x slower again.
    """
    rows = values.detach().numpy()
    return torch.from_numpy(np.partition(rows, k - 1, axis=-1)[:, k - 1:k])


def kth_smallest_by_topk(values: Tensor, k: int) -> Tensor:
    """k-th smallest entry (1-based) of each row of a B x n tensor, as B x 1, by `topk`
    of the smaller side (the largest n-k+1 or the smallest k entries, unsorted).

    For CUDA, whose kthvalue is far slower on large rows (H200, 2^24 entries: 123 ms
    against 0.5 ms for topk; 2.4M entries: 11 ms against 0.3 ms).
    """
    n = values.shape[-1]
    if k <= n - k + 1:
        return torch.topk(values, k, dim=-1, largest=False, sorted=False).values.amax(-1, keepdim=True)
    return torch.topk(values, n - k + 1, dim=-1, largest=True, sorted=False).values.amin(-1, keepdim=True)


class FlatLayout:
    """A list of same-dtype, same-device tensors laid end to end in flat buffers kept
    between steps, with views of each tensor's piece shaped and strided like the tensor.

    Tensors of equal size are adjacent, so each size is one B x n view of a buffer (one
    selection per size), and every element-wise step runs once over a whole buffer: kernel
    launches grow with the number of distinct sizes, not of layers, which is what a small
    model's ZSharp step time is made of on a GPU. The cached views spare creating a view per
    tensor per step (about 8 us each on the host), and carrying the tensors' strides
    (channels_last included) keeps `torch._foreach_*` between them on its one-kernel path;
    the filter does not depend on the order of entries within a tensor.

    Where kernel launches are costly (any device but the CPU, or `launch_bound=True`),
    `apply_per_tensor` broadcasts a value per tensor by one gather through a cached index
    (4 bytes per entry on the device) and the quantile is found by `topk`; on CPU it
    broadcasts per size over B x n views, which makes no extra pass over memory (a gather of
    15M entries costs 2.4 times an element-wise subtraction there, on 2 cores), and selects
    by introselect.

    Memory: two buffers of `work_dtype` (three with fp16/bf16 tensors), each the size of
    the tensors, and the index.
    """

    def __init__(self, tensors: list[Tensor], work_dtype: torch.dtype, launch_bound: bool = False):
        numels = [t.numel() for t in tensors]
        self.order = sorted(range(len(numels)), key=numels.__getitem__)
        self.numels = [numels[i] for i in self.order]
        self.batches: list[tuple[int, int, int]] = []  # (start, rows, n)
        start = 0
        for n, run in itertools.groupby(self.numels):
            rows = len(list(run))
            self.batches.append((start, rows, n))
            start += rows * n
        device, dtype = tensors[0].device, tensors[0].dtype
        self.launch_bound = launch_bound or device.type != "cpu"
        self.tensor_of_entry: Tensor | None = None
        if self.launch_bound:
            # Filled on the device (once per layout): a copy from the host would synchronise.
            self.tensor_of_entry = torch.cat([
                torch.full((n,), i, dtype=torch.int32, device=device)
                for i, n in enumerate(self.numels)])
        self.flat = torch.empty(start, dtype=work_dtype, device=device)
        self.zero = torch.zeros((), dtype=work_dtype, device=device)  # where(..., out=) takes no number
        self.work = torch.empty_like(self.flat)
        self.out = self.work if dtype == work_dtype else torch.empty(start, dtype=dtype, device=device)
        self._like = [(t.shape, torch.empty_like(t, device="meta").stride()) for t in tensors]
        self.flat_views, self.out_views = self.views(self.flat), self.views(self.out)
        self.work_pieces = self.work.split(self.numels)  # in buffer order

    def views(self, buffer: Tensor) -> list[Tensor]:
        """One view of `buffer` per tensor, in the caller's order, with its shape and strides
        (those `empty_like` gives it: its own where it is dense)."""
        pieces: list[Tensor | None] = [None] * len(self.order)
        for i, piece in zip(self.order, buffer.split(self.numels)):
            shape, stride = self._like[i]
            pieces[i] = piece.as_strided(shape, stride)
        return pieces

    def rows(self, flat: Tensor) -> list[Tensor]:
        """One B x n view of `flat` per distinct size n."""
        return [flat[start:start + rows * n].view(rows, n) for start, rows, n in self.batches]

    def apply_per_tensor(self, fn: Callable[..., object], buffers: tuple[Tensor, ...],
                         per_tensor: tuple[Tensor, ...]) -> None:
        """Call `fn(*buffers, *values)`, each value held one per tensor (in buffer order) and
        broadcast over that tensor's entries. `fn` is element-wise and writes in place or
        through `out=`; it runs once on the whole buffers, or once per distinct size."""
        if self.launch_bound:
            fn(*buffers, *(v.index_select(0, self.tensor_of_entry) for v in per_tensor))
            return
        sizes = [rows for _, rows, _ in self.batches]
        views = zip(*(self.rows(b) for b in buffers))
        values = zip(*(v.split(sizes) for v in per_tensor))
        for buffer_views, value_views in zip(views, values):
            fn(*buffer_views, *(v.unsqueeze(-1) for v in value_views))

    def keep_mask(self, alpha: float) -> Tensor:
        """ZSharp's filter of the tensors copied into `flat`: a bool buffer, True where |z|
        exceeds the alpha-quantile of |z| in the entry's own tensor (linear interpolation,
        strict >).

        z-scoring divides |g - mean(g)| by a positive constant per tensor, which keeps the
        order, so the test is made on |g - mean(g)| itself (the seed's rounded quotients can
        tie two neighbours an ulp apart and drop one entry this keeps). With linear
        interpolation the quantile lies between the j-th and (j+1)-th smallest values,
        j = floor(alpha * (n - 1)) + 1, and none lies strictly between them, so
        "> quantile" is "> the j-th smallest" (also when the two are equal).
        """
        flat = self.flat
        means = torch.cat([r.mean(dim=-1) for r in self.rows(flat)])
        deviation = torch.empty_like(flat)
        self.apply_per_tensor(lambda f, out, m: torch.sub(f, m, out=out), (flat, deviation), (means,))
        deviation.abs_()
        select = kth_smallest_by_topk if self.launch_bound else kth_smallest_by_partition
        thresholds = torch.cat([select(r, math.floor(alpha * (r.shape[-1] - 1)) + 1).view(-1)
                                for r in self.rows(deviation)])
        mask = torch.empty_like(flat, dtype=torch.bool)
        self.apply_per_tensor(lambda d, out, t: torch.gt(d, t, out=out), (deviation, mask), (thresholds,))
        return mask


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    # Selection in float32 at least: quantile and selection refuse or lose precision in
    # fp16/bf16.
    return torch.promote_types(dtype, torch.float32)


def zsharp_masks(grads: list[Tensor], alpha: float) -> list[Tensor]:
    """ZSharp's filter of each tensor (same dtype and device): bool tensors shaped like
    `grads`, True where the entry is kept."""
    layout = FlatLayout(grads, _work_dtype(grads[0].dtype))
    torch._foreach_copy_(layout.flat_views, grads)
    return layout.views(layout.keep_mask(alpha))


class ZSharp(SAMFamily):
    """ZSharp (Yun 2025): SAM whose ascent keeps only large-|z-score| gradient entries.

    For tensors with ndim > 1: f = g where |z| > alpha-quantile of |z| (per tensor), else 0,
    e = rho * f / ||f|| (each tensor rescaled to norm rho on its own), or the SAM
    perturbation rho * g / ||g|| if nothing survives. Tensors with ndim <= 1 (biases,
    norm weights) get the SAM perturbation, ||g|| over all unfiltered gradients.
    `last_ascent_stats["kept_fraction"]`: entries kept over entries filtered;
    `["ascent_cosine"]`: the cosine between e and SAM's ascent direction g / ||g||.
    """

    def __init__(self, params, base_optimizer=torch.optim.Adam, rho: float = 0.05,
                 alpha: float = 0.95, **base_kwargs):
        super().__init__(params, base_optimizer, dict(rho=rho, alpha=alpha), base_kwargs)
        # Layouts used by the last ascent, by the shapes, strides, dtype and device of the
        # gradients they hold; those no longer used are dropped with their buffers.
        self._layouts: dict[tuple, FlatLayout] = {}
        # The last ascent's <e, g> and ||g||, for its cosine with SAM's ascent.
        self._dot: Tensor | None = None
        self._grad_norm: Tensor | None = None
        # True before the first step: filter on CPU as on a GPU (gathers, topk), for tests.
        self.launch_bound = False

    def _filtered_offsets(self, grads: list[Tensor], group: dict, sam_scale: Tensor,
                          layouts: dict[tuple, FlatLayout], group_index: int) -> tuple[FlatLayout, Tensor]:
        """e for same-dtype, same-device gradients with ndim > 1 of one parameter group,
        left in the layout's `out_views` (reused by the next ascent); returns the layout and
        how many entries the filter kept (a device tensor).

        Layouts are keyed by group too: two groups with the same shapes need two sets of
        buffers, or the second would overwrite the perturbation handed out for the first.
        """
        key = (group_index, grads[0].dtype, grads[0].device, *((g.shape, g.stride()) for g in grads))
        layout = layouts[key] = (self._layouts.get(key)
                                 or FlatLayout(grads, _work_dtype(grads[0].dtype), self.launch_bound))
        torch._foreach_copy_(layout.flat_views, grads)
        mask = layout.keep_mask(group["alpha"])
        torch.where(mask, layout.flat, layout.zero, out=layout.work)  # f
        kept_norms = torch.stack(torch._foreach_norm(layout.work_pieces))
        # Per tensor: rho / ||f||, and SAM's scale where nothing survived the filter (there
        # f = 0, so the first term vanishes and the second adds g * SAM's scale).
        scale = (kept_norms + 1e-12).reciprocal_().mul_(group["rho"])
        fallback = (kept_norms == 0) * sam_scale
        layout.apply_per_tensor(lambda g, f, s, fb: f.mul_(s).addcmul_(g, fb),
                                (layout.flat, layout.work), (scale, fallback))  # work is now e
        if layout.out is not layout.work:
            layout.out.copy_(layout.work)
        # <e, g> over these tensors (one kernel), for the ascent's cosine with SAM's.
        dot = torch.dot(layout.work, layout.flat)
        self._dot = dot if self._dot is None else self._dot + dot
        return layout, torch.count_nonzero(mask)

    def _perturbations(self, groups):
        grad_norm = _global_norm([g for _, _, grads in groups for g in grads])
        self._grad_norm, self._dot = grad_norm, None
        kept: Tensor | None = None  # entries kept, summed over the filtered tensors
        filtered = 0
        layouts: dict[tuple, FlatLayout] = {}
        perturbations = []
        for group_index, (group, _, grads) in enumerate(groups):
            sam_scale = group["rho"] / (grad_norm + 1e-12)
            group_e: list[Tensor | None] = [None] * len(grads)
            small = [i for i, g in enumerate(grads) if g.ndim <= 1]
            if small:
                scaled = torch._foreach_mul([grads[i] for i in small], sam_scale)
                for i, e in zip(small, scaled):
                    group_e[i] = e
                # <e, g> = SAM's scale x ||g||^2 over these: one multi-tensor norm.
                norms = torch.stack(torch._foreach_norm([grads[i] for i in small]))
                dot = torch.dot(norms, norms) * sam_scale
                self._dot = dot if self._dot is None else self._dot + dot
            for indices in _filtered_by_dtype_and_device(grads):
                layout, kept_count = self._filtered_offsets(
                    [grads[i] for i in indices], group, sam_scale, layouts, group_index)
                for i, e in zip(indices, layout.out_views):
                    group_e[i] = e
                kept = kept_count if kept is None else kept + kept_count
                filtered += layout.flat.numel()
            perturbations.append(group_e)
        self._layouts = layouts
        self.last_ascent_stats = {} if kept is None else {"kept_fraction": kept / filtered}
        return perturbations

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """The ascent, and `ascent_cosine`: the cosine between ZSharp's perturbation and
        SAM's (the full gradient's direction), <e, g> / (||e|| ||g||), 1 where the filter
        changes nothing. Device tensors, no sync."""
        super().first_step(zero_grad)
        norm = self.last_ascent_stats.get("perturbation_norm")
        if norm is not None and self._dot is not None:
            self.last_ascent_stats["ascent_cosine"] = self._dot / (norm * self._grad_norm + 1e-30)


def _filtered_by_dtype_and_device(grads: list[Tensor]) -> list[list[int]]:
    """Indices of the gradients ZSharp filters (ndim > 1), one list per (dtype, device)."""
    lists: dict[tuple, list[int]] = {}
    for i, g in enumerate(grads):
        if g.ndim > 1:
            lists.setdefault((g.dtype, g.device), []).append(i)
    return list(lists.values())


@contextlib.contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """Inside, BatchNorm layers normalise with batch statistics but update no running
    statistics (nor `num_batches_tracked`); restored on exit.

    For the second (perturbed) pass of a SAM-family step: updating there would count each
    batch twice, at weights that are never kept. Turning off `track_running_stats` rather
    than setting momentum to 0 (davda54) also keeps a NaN in the perturbed pass out of the
    running statistics (0 * NaN is NaN).
    """
    layers = [m for m in model.modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in layers:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in layers:
            m.track_running_stats = True


# ---- what the registry (trainables.catalog) names here -----------------------------------

def trainable_groups(model: nn.Module) -> list[dict]:
    """One parameter group: every parameter that requires a gradient."""
    return [{"params": [p for p in model.parameters() if p.requires_grad]}]


def asam_groups(model: nn.Module) -> list[dict]:
    """ASAM's groups: names ending in "weight" adaptive, the rest not."""
    return ASAM.param_groups_by_name(model.named_parameters())


def create_optimizer(name: str, model: nn.Module, **hparams) -> torch.optim.Optimizer:
    """Build optimizer `name` for `model`'s trainable parameters.

    hparams: `base` (a base optimizer, SAM family only, default adam as in the seed), the
    base's keyword arguments (lr, weight_decay; momentum, nesterov for sgd; betas, eps for
    adam/adamw) and the variant's own hyperparameters (registry `hparams`). A keyword the
    optimizer does not take raises ValueError naming it.
    """
    info = get_optimizer_info(name)
    base = get_base(hparams.pop("base", "adam") if info.wrapper else name)
    # The keyword arguments its hyperparameters become (beta1, beta2 -> betas), and more.
    taken = set(base.to_kwargs({h.name: 0.0 for h in base.hparams})) | base.extra
    allowed = taken | info.own_hparams
    unknown = sorted(set(hparams) - allowed)
    if unknown:
        where = f"{name} with base {base.name}" if info.wrapper else name
        raise ValueError(f"{where} does not take {', '.join(unknown)}; it takes "
                         f"{', '.join(sorted(allowed | ({'base'} if info.wrapper else set())))}")
    groups = resolve(info.param_groups)(model)
    if info.wrapper is None:
        return resolve(base.cls)(groups, **hparams)
    return resolve(info.wrapper)(groups, base_optimizer=resolve(base.cls), **hparams)
