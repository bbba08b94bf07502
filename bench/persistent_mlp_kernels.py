"""The Triton kernel of `bench_persistent_mlp.py` (its own module: Triton imported at the top)."""

import triton
import triton.language as tl


@triton.jit
def grid_barrier(bar_ptr, target, SPIN_LIMIT: tl.constexpr):
    tl.debug_barrier()  # every thread's stores are issued before this program is counted in
    tl.atomic_add(bar_ptr, 1, sem="release", scope="gpu")
    seen = tl.atomic_add(bar_ptr, 0, sem="acquire", scope="gpu")
    spins = 0
    while (seen < target) & (spins < SPIN_LIMIT):  # bounded: a grid larger than the GPU holds fails, not hangs
        seen = tl.atomic_add(bar_ptr, 0, sem="acquire", scope="gpu")
        spins += 1
    tl.debug_barrier()


@triton.jit
def load_w(w_ptr, row0, nrows, N, K, t, T, PAIRED: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
           KT: tl.constexpr):
    j = t // KT
    rows = row0 + j * BN + tl.arange(0, BN)
    cols = (t - j * KT) * BK + tl.arange(0, BK)
    ok = (rows[:, None] < row0 + nrows) & (cols[None, :] < K) & (t < T)
    ptrs = w_ptr + rows[:, None].to(tl.int64) * K + cols[None, :]
    w = tl.load(ptrs, mask=ok, other=0.0, eviction_policy="evict_first")
    u = w
    if PAIRED:  # the up half of a (2N, K) gate/up weight
        u = tl.load(ptrs + N.to(tl.int64) * K, mask=ok, other=0.0, eviction_policy="evict_first")
    return w, u


@triton.jit
def load_x(x_ptr, t, T, K, BK: tl.constexpr, KT: tl.constexpr):
    cols = (t % KT) * BK + tl.arange(0, BK)
    # .cg: past L1, which may still hold the vector as another program wrote it a layer ago
    return tl.load(x_ptr + cols, mask=(cols < K) & (t < T), other=0.0, cache_modifier=".cg")


@triton.jit
def rows_stream(x_ptr, g_ptr, r_ptr, y_ptr, w_ptr, w0, u0, w1, u1, row0, nrows, N, K, eps, NORM: tl.constexpr,
                SWIGLU: tl.constexpr, RESIDUAL: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                KT: tl.constexpr):
    """Rows [row0, row0 + nrows) of y = (x [normed]) · Wᵀ [SwiGLU] [+ r], tiles (BN, BK) in order, each
    requested four tiles ahead (the first two, w0/u0 and w1/u1, by the caller); sums kept per lane and reduced
    once per row block (no cross-warp reduction per tile)."""
    T = tl.cdiv(tl.maximum(nrows, 0), BN) * KT
    w2, u2 = load_w(w_ptr, row0, nrows, N, K, 2, T, SWIGLU, BN, BK, KT)
    w3, u3 = load_w(w_ptr, row0, nrows, N, K, 3, T, SWIGLU, BN, BK, KT)
    x0 = load_x(x_ptr, 0, T, K, BK, KT)
    x1 = load_x(x_ptr, 1, T, K, BK, KT)
    x2 = load_x(x_ptr, 2, T, K, BK, KT)
    x3 = load_x(x_ptr, 3, T, K, BK, KT)
    acc = tl.zeros((BN, BK), tl.float32)
    acc_u = tl.zeros((BN, BK), tl.float32)
    squares = tl.zeros((BK,), tl.float32)
    inv_rms = tl.sum(squares, axis=0) + 1.0
    for t in range(T):
        w4, u4 = load_w(w_ptr, row0, nrows, N, K, t + 4, T, SWIGLU, BN, BK, KT)
        x4 = load_x(x_ptr, t + 4, T, K, BK, KT)
        j = t // KT
        kt = t - j * KT
        xv = x0.to(tl.float32)
        if NORM:
            squares += tl.where(j == 0, xv * xv, 0.0)  # the first row block walks all of K once
            cols = kt * BK + tl.arange(0, BK)
            xv = xv * tl.load(g_ptr + cols, mask=cols < K, other=0.0).to(tl.float32)
        acc += w0.to(tl.float32) * xv[None, :]
        if SWIGLU:
            acc_u += u0.to(tl.float32) * xv[None, :]
        if kt == KT - 1:
            y, y_u = tl.sum(acc, axis=1), tl.sum(acc_u, axis=1)
            if NORM:
                inv_rms = tl.where(j == 0, tl.rsqrt(tl.sum(squares, axis=0) / K + eps), inv_rms)
                y, y_u = y * inv_rms, y_u * inv_rms
            if SWIGLU:
                y = y / (1.0 + tl.exp(-y)) * y_u
            rows = row0 + j * BN + tl.arange(0, BN)
            ok = rows < row0 + nrows
            if RESIDUAL:
                y += tl.load(r_ptr + rows, mask=ok, other=0.0, cache_modifier=".cg").to(tl.float32)
            tl.store(y_ptr + rows, y.to(y_ptr.dtype.element_ty), mask=ok)
            acc = tl.zeros((BN, BK), tl.float32)
            acc_u = tl.zeros((BN, BK), tl.float32)
        w0, u0, w1, u1, w2, u2, w3, u3 = w1, u1, w2, u2, w3, u3, w4, u4
        x0, x1, x2, x3 = x1, x2, x3, x4


@triton.jit
def mlp_persistent(x_ptr, h_ptr, g_ptr, wgu_ptr, wd_ptr, bar_ptr, L, H, M, eps, WORK: tl.constexpr,
                   EARLY: tl.constexpr, BN_A: tl.constexpr, BK_A: tl.constexpr, KT_A: tl.constexpr,
                   BN_B: tl.constexpr, BK_B: tl.constexpr, KT_B: tl.constexpr, SPIN_LIMIT: tl.constexpr):
    p = tl.program_id(0)
    G = tl.num_programs(0)
    ra = tl.cdiv(tl.cdiv(M, BN_A), G) * BN_A  # rows per program, whole tiles
    ra0 = p * ra
    na = tl.minimum(ra, M - ra0)
    ta = tl.cdiv(tl.maximum(na, 0), BN_A) * KT_A
    rb = tl.cdiv(tl.cdiv(H, BN_B), G) * BN_B
    rb0 = p * rb
    nb = tl.minimum(rb, H - rb0)
    tb = tl.cdiv(tl.maximum(nb, 0), BN_B) * KT_B
    gu_size = 2 * M.to(tl.int64) * H
    d_size = H.to(tl.int64) * M
    wa0, ua0 = load_w(wgu_ptr, ra0, na, M, H, 0, ta, True, BN_A, BK_A, KT_A)
    wa1, ua1 = load_w(wgu_ptr, ra0, na, M, H, 1, ta, True, BN_A, BK_A, KT_A)
    for layer in tl.range(0, L):
        wd = wd_ptr + layer * d_size
        if WORK:
            rows_stream(x_ptr, g_ptr + layer * H, x_ptr, h_ptr, wgu_ptr + layer * gu_size, wa0, ua0, wa1, ua1,
                        ra0, na, M, H, eps, True, True, False, BN_A, BK_A, KT_A)
        if not EARLY:
            grid_barrier(bar_ptr, (2 * layer + 1) * G, SPIN_LIMIT)
        wb0, _ = load_w(wd, rb0, nb, H, M, 0, tb, False, BN_B, BK_B, KT_B)
        wb1, _ = load_w(wd, rb0, nb, H, M, 1, tb, False, BN_B, BK_B, KT_B)
        if EARLY:  # the first tiles are on their way while this program waits for the others
            grid_barrier(bar_ptr, (2 * layer + 1) * G, SPIN_LIMIT)
        if WORK:
            rows_stream(h_ptr, g_ptr, x_ptr, x_ptr, wd, wb0, wb0, wb1, wb1, rb0, nb, H, M, eps, False, False,
                        True, BN_B, BK_B, KT_B)
        if not EARLY:
            grid_barrier(bar_ptr, (2 * layer + 2) * G, SPIN_LIMIT)
        nxt = wgu_ptr + (layer + 1) * gu_size
        tn = tl.where(layer + 1 < L, ta, 0)
        wa0, ua0 = load_w(nxt, ra0, na, M, H, 0, tn, True, BN_A, BK_A, KT_A)
        wa1, ua1 = load_w(nxt, ra0, na, M, H, 1, tn, True, BN_A, BK_A, KT_A)
        if EARLY:
            grid_barrier(bar_ptr, (2 * layer + 2) * G, SPIN_LIMIT)
