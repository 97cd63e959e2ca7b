"""The SAM family (SAM, ASAM, Friendly-SAM, ZSharp) and `create_optimizer`; the registry
that names them (and re-exported here) is trainables.catalog, which needs no torch.

Each variant is one small class in the davda54/sam shape: it wraps a base optimizer,
`first_step` adds an ascent perturbation e to the weights, `second_step` restores the
weights exactly and steps the base optimizer with the gradient taken at w + e. The
classes differ only in how e is computed (each class's docstring states its rule and paper).

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
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor, nn

from trainables.catalog import (BaseOptimizer, OptimizerInfo, all_hparams, entry_of, get_base,
                                get_optimizer_info, hparams_of, list_bases, list_optimizers, optimizer_kwargs,
                                register_optimizer, resolve)
from trainables.zfilter import FlatLayout, work_dtype

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

    Subclasses implement `_perturbations`; their own hyperparameters are those of their
    registry entry (trainables.catalog), taken as keyword arguments, each defaulting to
    the entry's default (None too: ASAM's rho is 0.5 because its entry says so), and
    `options` names any further setting of theirs with its default (ASAM's `adaptive`).
    Every other keyword argument goes to the base optimizer. Attach LR schedulers to
    `base_optimizer`; its param_groups are this optimizer's param_groups (one set of
    dicts), so hparams such as rho can be changed per group at run time.
    """

    options: dict = {}  # a variant's own settings that are not trial hyperparameters

    def __init__(self, params, base_optimizer: type[torch.optim.Optimizer] = torch.optim.Adam, **kwargs):
        own = {**{h.name: h.default for h in entry_of(type(self)).hparams}, **self.options}
        for name in own:
            if kwargs.get(name) is not None:
                own[name] = kwargs[name]
            kwargs.pop(name, None)
        registered = all_hparams()  # the valid ranges, as the registry states them
        for name, value in own.items():
            if name in registered:
                registered[name].check(value)
        super().__init__(params, {**own, **kwargs})
        self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
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

    options = {"adaptive": True}

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


class ZSharp(SAMFamily):
    """ZSharp (Yun 2025): SAM whose ascent keeps only large-|z-score| gradient entries.

    For tensors with ndim > 1: f = g where |z| > alpha-quantile of |z| (per tensor), else 0,
    e = rho * f / ||f|| (each tensor rescaled to norm rho on its own), or the SAM
    perturbation rho * g / ||g|| if nothing survives. Tensors with ndim <= 1 (biases,
    norm weights) get the SAM perturbation, ||g|| over all unfiltered gradients.
    `last_ascent_stats["kept_fraction"]`: entries kept over entries filtered;
    `["ascent_cosine"]`: the cosine between e and SAM's ascent direction g / ||g||.
    """

    def __init__(self, params, base_optimizer=torch.optim.Adam, **kwargs):
        super().__init__(params, base_optimizer, **kwargs)
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
                                 or FlatLayout(grads, work_dtype(grads[0].dtype), self.launch_bound))
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
