"""The one place Numba is configured, and the building blocks kernels share: fexp, rowmax, rescale.

``kernel`` is ``numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"}, error_model="numpy")``:
compiled machine code is cached next to the source, so only the first run on a machine pays the
compile. The two fast-math flags let LLVM reorder sums (so a row sum or a dot product runs in SIMD
lanes) and fuse ``a * b + c`` into one FMA; they change results only at the rounding level (the
kernels still agree with their NumPy twins to ~1e-12 in float64). NaN and inf keep their IEEE
meaning (no ``nnan``/``ninf``), so a diverging run still shows up as a non-finite loss. The NumPy
error model makes ``x / 0`` give inf/nan as in NumPy instead of raising ZeroDivisionError: the
check Python semantics needs is a branch in every loop that divides, and it stops vectorisation.

With the environment variable ``NUMBA_DISABLE_JIT=1`` Numba returns the plain Python function, so
every kernel still runs (slowly) and can be stepped through in a debugger. Kernels are serial (no
``parallel=True``): on 2 cores the BLAS pool already uses both, and two thread pools spinning
against each other cost more than they give.

Caveat: Numba's cache tracks only a kernel's own source file. After editing :func:`fexp`,
:func:`rowmax` or :func:`rescale` below, delete ``alh_ref/ops/__pycache__/*.nbi`` and ``*.nbc`` so
the kernels that call them are rebuilt.
"""
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

FASTMATH = frozenset({"reassoc", "contract"})


def kernel(fn):
    """Decorate a hot loop as a cached, serial, no-Python-mode Numba kernel (see module doc)."""
    return njit(cache=True, nogil=True, fastmath=set(FASTMATH), error_model="numpy")(fn)


# ----------------------------------------------------------------------------------------------
# fexp: exp that vectorises in float32 kernels.
#
# This Numba build has no SVML, so np.exp inside a kernel is a scalar libm call (~4 ns, and it
# stops the loop from being vectorised). For float32, fexp instead evaluates exp with plain
# arithmetic that LLVM turns into AVX-512 code (~0.4 ns per element): Cody-Waite range reduction
# x = n ln2 + r with |r| <= ln2/2, a degree-6 polynomial for exp(r) (Cephes expf), and 2**n
# written straight into the float's exponent bits. For float64 it is np.exp, unchanged.

def fexp(x):
    """exp(x). In jitted float32 code: the polynomial :func:`_exp_f32`; otherwise ``np.exp``."""
    return np.exp(x)


@intrinsic
def _pow2_f32(typingctx, n):
    """2**n as float32 for an integer n in [-126, 127]: the bits (n + 127) << 23 (an LLVM bitcast)."""
    if not isinstance(n, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        k = builder.trunc(args[0], i32) if n.bitwidth > 32 else builder.sext(args[0], i32) if n.bitwidth < 32 else args[0]
        bits = builder.shl(builder.add(k, ir.Constant(i32, 127)), ir.Constant(i32, 23))
        return builder.bitcast(bits, ir.FloatType())

    return types.float32(n), codegen


@njit(cache=True, nogil=True, error_model="numpy")
def _exp_f32(x):
    """float32 exp(x), vectorisable; max relative error 8.4e-8 (< 1 ulp) on [-87.3, 88].

    exp(x) = 2**n exp(r), n = round(x / ln2), r = x - n ln2 (ln2 split in two parts so r is exact),
    exp(r) ~ 1 + r + r^2 P(r) (Cephes expf, degree 6). Out of range: exp(x) = 0 for x < -87.3365
    (below the smallest normal float32, where np.exp would return a subnormal or 0) and
    exp(88) = 1.65e38 for x > 88 (np.exp: up to 3.4e38, then inf). NaN gives NaN. Compiled without
    fast-math so the range reduction keeps its rounding order wherever it is inlined.
    """
    f = np.float32
    underflow = x < f(-87.33654)                                 # exp(x) < 2**-126
    x = min(max(x, f(-87.33654)), f(88.0))
    n = np.floor(x * f(1.44269504088896341) + f(0.5))           # round(x / ln2)
    r = x - n * f(0.693359375)                                   # ln2 = 0.693359375 - 2.12194440e-4 ...
    r = r - n * f(-2.12194440e-4)
    p = f(1.9875691500e-4)
    p = p * r + f(1.3981999507e-3)
    p = p * r + f(8.3334519073e-3)
    p = p * r + f(4.1665795894e-2)
    p = p * r + f(1.6666665459e-1)
    p = p * r + f(5.0000001201e-1)
    p = p * (r * r) + r + f(1)                                   # exp(r)
    return f(0) if underflow else p * _pow2_f32(np.int32(n))


@overload(fexp)
def _fexp_jit(x):
    """Inside jitted code: float32 -> :func:`_exp_f32`, any other type -> np.exp."""
    if x == types.float32:
        return lambda x: _exp_f32(x)
    return lambda x: np.exp(x)


# ----------------------------------------------------------------------------------------------
# rowmax: a max reduction that runs in parallel.
#
# ``m = max(m, x[j])`` in one accumulator is a chain of dependent compares (~4 cycles each) that
# LLVM will not vectorise without the ``nnan`` fast-math flag, which kernels do not set. Eight
# independent accumulators let eight compares run at once (3-4x faster on a 2048-long row).

@njit(cache=True, nogil=True, error_model="numpy")
def rowmax(x, n):
    """max(x[0], ..., x[n-1]) for a 1-D array x and n >= 1 (a NaN may be skipped, as with ``>``).

    Kernels use it as the shift of a softmax, where a NaN elsewhere in the row still turns the
    row's exp sum, and so the result, into NaN.
    """
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = x[0]
    j = 0
    while j + 8 <= n:
        m0 = max(m0, x[j])
        m1 = max(m1, x[j + 1])
        m2 = max(m2, x[j + 2])
        m3 = max(m3, x[j + 3])
        m4 = max(m4, x[j + 4])
        m5 = max(m5, x[j + 5])
        m6 = max(m6, x[j + 6])
        m7 = max(m7, x[j + 7])
        j += 8
    m = max(max(max(m0, m1), max(m2, m3)), max(max(m4, m5), max(m6, m7)))
    while j < n:
        m = max(m, x[j])
        j += 1
    return m


# ----------------------------------------------------------------------------------------------
# rescale: a multiply by a reciprocal that stays a multiply.
#
# Under the ``reassoc`` fast-math flag LLVM rewrites ``x * (1 / y)`` into ``x / y`` when the
# reciprocal has one use: a loop ``row[j] *= inv`` after ``inv = 1 / tot`` becomes one vector
# division per 8 entries (about 10x the cost of a multiply). This loop is compiled without
# fast-math, so its multiply keeps its own flags when it is inlined into a kernel.

@njit(cache=True, nogil=True, error_model="numpy")
def rescale(x, n, c):
    """In place: x[j] <- x[j] * c for j < n, for a 1-D array x (a multiply, never folded into a division)."""
    for j in range(n):
        x[j] *= c
