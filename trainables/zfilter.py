"""ZSharp's filter, fast: the gradients laid end to end in flat buffers (`FlatLayout`)
and the per-tensor quantile of |g - mean(g)| found by selection (introselect on CPU,
`topk` on CUDA) instead of a sort, so kernel launches grow with the number of distinct
tensor sizes, not with depth. No host synchronisation.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor


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


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    # Selection in float32 at least: quantile and selection refuse or lose precision in
    # fp16/bf16.
    return torch.promote_types(dtype, torch.float32)


def zsharp_masks(grads: list[Tensor], alpha: float) -> list[Tensor]:
    """ZSharp's filter of each tensor (same dtype and device): bool tensors shaped like
    `grads`, True where the entry is kept."""
    layout = FlatLayout(grads, work_dtype(grads[0].dtype))
    torch._foreach_copy_(layout.flat_views, grads)
    return layout.views(layout.keep_mask(alpha))
