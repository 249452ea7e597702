"""CPU-independent float64 kernels shared by the generators (docs/reproducibility.md).

IEEE-754 basic operations only, in a fixed order, so that the same inputs give the same
bits on every CPU: no BLAS or LAPACK call and no transcendental ufunc (their kernels and
code paths follow the CPU). Each numpy call below is one elementwise operation (one
rounding per element), never a fused or reordered one. Also here: the random streams
both generators draw from, so that one layout of ``SeedSequence(seed)`` serves both.
"""

from __future__ import annotations

import math

import numpy as np

from mae_hlvm.core.config import ParamsError

# Children of SeedSequence(data.seed): the fixed functions, the train samples, the test
# samples, the texture vectors, the cue-conflict samples.
STREAM_FUNCTIONS, STREAM_TRAIN, STREAM_TEST, STREAM_TEXTURE, STREAM_CUE = 0, 1, 2, 3, 4
N_STREAMS = 5  # SeedSequence.spawn(n)'s first children do not depend on n: adding streams moves none

# CPU-independent float64 kernels: IEEE-754 basic operations only, in a fixed order, so
# that the same inputs give the same bits on every CPU (module docstring). Each numpy
# call below is one elementwise operation (one rounding per element), never a fused or
# reordered one.

# Cody-Waite split of ln 2 (the fdlibm constants): _LN2_HI has 21 trailing zero bits, so
# k * _LN2_HI is exact for |k| < 2**20 and the reduced argument keeps full precision.
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e00
# 1/n! for n = 14 .. 1: Taylor series of expm1 on |r| <= ln(2)/2, truncation error
# below 2e-19 relative, far under float64's 1.1e-16.
_EXPM1_COEFFS = tuple(1.0 / math.factorial(n) for n in range(14, 0, -1))
# tanh(x) rounds to +-1.0 in float64 beyond |x| = 19.06; clipping keeps exp finite.
TANH_CLIP = 20.0


def expm1_nonneg(y: np.ndarray) -> np.ndarray:
    """exp(y) - 1 for 0 <= y <= 2 * TANH_CLIP, within a few float64 ulp.

    y = k ln2 + r with |r| <= ln2 / 2; expm1(r) by Horner on the Taylor series; then
    exp(y) - 1 = 2**k expm1(r) + (2**k - 1), both terms exact scalings or sums.
    """
    k = np.rint(y * _INV_LN2)
    r = (y - k * _LN2_HI) - k * _LN2_LO
    p = np.full_like(r, _EXPM1_COEFFS[0])
    for c in _EXPM1_COEFFS[1:]:  # p = p * r + c, in place: two roundings per step, no FMA
        np.multiply(p, r, out=p)
        np.add(p, c, out=p)
    np.multiply(p, r, out=p)
    ki = k.astype(np.int64)
    return np.ldexp(p, ki) + (np.ldexp(1.0, ki) - 1.0)


_CHUNK = 1 << 16  # elements per block in tanh: its ~35 passes then run in the CPU's cache


def tanh(x: np.ndarray) -> np.ndarray:
    """tanh(x) = expm1(2|x|) / (expm1(2|x|) + 2) with the sign of x: within 3 ulp of
    np.tanh, but the same bits on every CPU (np.tanh's AVX2/AVX-512 loops and its
    fallback differ in the last bit). Elementwise, so the blocking changes no bit."""
    flat = np.ascontiguousarray(x, dtype=np.float64).reshape(-1)
    out = np.empty_like(flat)
    for start in range(0, flat.size, _CHUNK):
        block = flat[start : start + _CHUNK]
        a = np.minimum(np.abs(block), TANH_CLIP)
        e = expm1_nonneg(a + a)
        out[start : start + _CHUNK] = np.copysign(e / (e + 2.0), block)
    return out.reshape(np.shape(x))


def contract(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``out[..., q] = sum_p w[..., q, p] * x[..., p]``, summed in the order p = 0, 1, ...

    x (..., P) and w (..., Q, P) broadcast over the leading axes (w may be one (Q, P)
    matrix for every node, or one per node). Replaces einsum / matmul, whose summation
    order and use of FMA depend on the CPU (BLAS kernels). Feature-first copies keep
    numpy's inner loops long: one multiply and one add per (q, p) over every node.
    """
    xs = np.ascontiguousarray(np.moveaxis(x, -1, 0))  # (P, ...)
    ws = np.ascontiguousarray(np.moveaxis(w, (-2, -1), (0, 1)))  # (Q, P, ...)
    n_out, n_in = ws.shape[:2]
    out = np.empty((n_out,) + np.broadcast_shapes(xs.shape[1:], ws.shape[2:]))
    term = np.empty(out.shape[1:])
    for q in range(n_out):
        acc = out[q, ...]  # a view, also when out is 1-D
        np.multiply(ws[q, 0], xs[0], out=acc)
        for p in range(1, n_in):
            np.multiply(ws[q, p], xs[p], out=term)
            np.add(acc, term, out=acc)
    return np.ascontiguousarray(np.moveaxis(out, 0, -1))


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a (M, K) @ b (K, N) summed in the order k = 0, 1, ... (no BLAS)."""
    return contract(a, np.swapaxes(b, -1, -2))


def sum_sq(v: np.ndarray) -> float:
    """The exactly rounded sum of the (rounded) squares of a 1-D array: order-free."""
    return math.fsum((v * v).tolist())


def householder_q(a: np.ndarray) -> np.ndarray:
    """The Q of a = QR (a: (M, N), M >= N) whose R has a positive diagonal.

    That Q is unique for a full-rank a: it is what LAPACK's QR followed by the sign fix in
    :func:`orthonormal` returns, evaluated here by Householder reflections in a fixed
    order so that its bits do not follow the CPU's BLAS/LAPACK kernels.
    """
    m, n = a.shape
    r = np.array(a, dtype=np.float64)
    reflectors = []
    diag_sign = np.empty(n)
    for j in range(n):
        x = r[j:, j]
        alpha = math.sqrt(sum_sq(x))
        sign = 1.0 if x[0] >= 0 else -1.0
        v = x.copy()
        v[0] = x[0] + sign * alpha  # no cancellation: x[0] and sign * alpha share a sign
        scale = 2.0 / sum_sq(v)
        r[j:, j:] = r[j:, j:] - (scale * v)[:, None] * contract(v, r[j:, j:].T)[None, :]
        reflectors.append((j, v, scale))
        diag_sign[j] = -sign  # R[j, j] = -sign * alpha after the reflection
    q = np.eye(m, n)
    for j, v, scale in reversed(reflectors):  # Q = H_0 H_1 ... H_{N-1} applied to I[:, :N]
        q[j:, :] = q[j:, :] - (scale * v)[:, None] * contract(v, q[j:, :].T)[None, :]
    return q * diag_sign



def orthonormal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Random matrices (..., rows, cols), rows >= cols, with orthonormal columns (Haar).

    Q of the QR factorisation of a Gaussian matrix with R's diagonal made positive: the
    sign fix makes the draw uniform (Haar) rather than biased by the QR convention.
    """
    gauss = rng.standard_normal(shape)
    out = np.empty_like(gauss)
    for idx in np.ndindex(*shape[:-2]):
        out[idx] = householder_q(gauss[idx])
    return out


def cos_pi_ratio(m: np.ndarray, n: int) -> np.ndarray:
    """cos(pi * m / n) for integer m >= 0, from basic operations (no libm cos).

    The angle is reduced exactly in integers to t = pi * m' / n in [0, pi/2] with a
    sign, then the Taylor series (to t**28, error below 1e-20) is summed by Horner.
    """
    m = np.asarray(m, dtype=np.int64) % (2 * n)  # period 2 pi
    m = np.where(m > n, 2 * n - m, m)  # cos(2 pi - t) = cos t: now t in [0, pi]
    sign = np.where(2 * m > n, -1.0, 1.0)  # cos(pi - t) = -cos t
    m = np.where(2 * m > n, n - m, m)  # now t in [0, pi/2]
    t = np.pi * m.astype(np.float64) / n
    t2 = t * t
    terms = 14
    c = np.full_like(t, (-1.0) ** terms / math.factorial(2 * terms))
    for k in range(terms - 1, -1, -1):
        c = c * t2 + (-1.0) ** k / math.factorial(2 * k)
    return sign * c


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Each row of x (K, d) scaled to unit Euclidean norm."""
    return x / np.sqrt((x * x).sum(axis=1, keepdims=True))


def unit_gain(x: np.ndarray, what: str) -> float:
    std = float(x.std())
    if not std > 0:
        raise ParamsError(f"data: {what} has zero variance; raise noise_scales or class_separation")
    return 1.0 / std
