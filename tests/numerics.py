"""Float comparisons whose tolerance comes from the numerics, not from the machine the test was written on.

Two float32 computations of the same quantity that sum in another order (another CPU's SIMD width, gloo's
all-reduce, chunked vs whole matrix products) differ by rounding alone. For a sum of ``n`` terms Higham's bound is
``|error| <= gamma_n * sum|x_i|`` with ``gamma_n = n * eps / (1 - n * eps)``; a gradient is a chain of a few such
reductions, and to first order the errors of chained reductions add: their bound is ``gamma_n`` with ``n`` the
summed length of the reductions behind a value. Cancellation (a gradient that is a small difference of large
terms) is what ``atol`` on the tensor's own scale is for. So two results are equal up to rounding when, element
by element,

    |got - want| <= rtol * |want| + atol,   rtol = safety * gamma_n,   atol = rtol * max|want|

where ``n`` is the summed length of the reductions behind the values and ``safety`` (default 4) covers the
constants the first-order bound leaves out. A real bug (a missing all-gather, a loss scaled by the world size, a
wrong temperature) moves results by a share of their scale, orders of magnitude above this; the tests show that
it still fails.
"""

from __future__ import annotations

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)


def float32_rtol(terms: int, safety: float = 4.0) -> float:
    """The relative rounding error bound of float32 reductions over ``terms`` terms in all (Higham's gamma_n)."""
    n = max(int(terms), 1)
    return safety * n * EPS32 / (1 - n * EPS32)


def _array(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def rounding_excess(got, want, terms: int, safety: float = 4.0, scale: float | None = None) -> float:
    """max(|got - want| / allowed): <= 1 when the two differ by float32 rounding alone. ``scale`` is the magnitude
    of the terms the values are sums of (default: the largest |want|). A value that cancels to about zero (the
    gradient of an attention key bias, which softmax's shift invariance makes zero in exact arithmetic) still
    carries the rounding of its terms: compare gradients with the model's largest gradient as the scale."""
    got, want = _array(got), _array(want)
    if got.shape != want.shape:
        raise AssertionError(f"shapes differ: {got.shape} vs {want.shape}")
    rtol = float32_rtol(terms, safety)
    if scale is None:
        scale = float(np.abs(want).max()) if want.size else 0.0
    allowed = rtol * np.abs(want) + rtol * scale + np.finfo(np.float32).tiny
    return float((np.abs(got - want) / allowed).max()) if want.size else 0.0


def gradient_scale(grads) -> float:
    """The largest |gradient| over all of a model's gradients: the scale of the terms each gradient sums."""
    return max(float(_array(g).__abs__().max()) for g in grads if g is not None)


def assert_float32_close(got, want, terms: int, safety: float = 4.0, what: str = "", scale: float | None = None
                         ) -> None:
    """Fail unless ``got`` equals ``want`` up to the rounding of float32 reductions over ``terms`` terms."""
    excess = rounding_excess(got, want, terms, safety, scale)
    if excess > 1:
        worst = float(np.abs(_array(got) - _array(want)).max())
        raise AssertionError(f"{what or 'values'} differ by {worst:.3g}, {excess:.1f}x the float32 rounding bound "
                             f"for {terms}-term reductions (rtol {float32_rtol(terms, safety):.3g})")
