// CUDA kernels of tdhook-kernels. Compiled to PTX by build.rs (nvcc --ptx) and loaded with
// candle's CudaDevice::get_or_load_custom_func. Every kernel exists for float, __half and
// __nv_bfloat16 activations (suffix _f32, _f16, _bf16); arithmetic is in float.
//
// Row geometry. An activation is seen as rows of length d (the last dim, element stride
// sd); row r starts at
//     offs ? offs[r] : (r / inner) * s_outer + (r % inner) * s_inner
// (elements, from the pointer passed in). Host code merges the leading dims into at most two
// levels, or uploads per-row offsets when they do not merge. Out-of-place outputs are
// contiguous: row r at r * d.
//
// Blocks are (tpr, rows_per_block): tpr threads (a multiple of 32) per row, blockDim.y rows
// per block, row = blockIdx.x * blockDim.y + threadIdx.y. Reductions are deterministic
// (fixed shuffle tree, then warps summed in order).

#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>

typedef long long i64;

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

struct RowGeom {
    i64 n_rows, inner, s_outer, s_inner, d, sd;
    const i64 *offs;
    __device__ __forceinline__ i64 row(i64 r) const {
        return offs ? offs[r] : (r / inner) * s_outer + (r % inner) * s_inner;
    }
};

// Which (b, t) rows are selected: kind 0 = range [start, end) of t, 1 = mask[t], 2 = mask[b*T+t].
struct PosSel {
    i64 t_len;
    int kind;
    i64 start, end;
    const uint8_t *mask;
    __device__ __forceinline__ bool active(i64 r) const {
        i64 t = r % t_len;
        if (kind == 0) return t >= start && t < end;
        if (kind == 1) return mask[t] != 0;
        return mask[r] != 0;
    }
};

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum over the tpr = blockDim.x threads of this row (threadIdx.y). All threads of the
// block must call it. `red` has blockDim.y * 32 floats.
__device__ __forceinline__ float row_sum(float v, float *red) {
    v = warp_sum(v);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    if (lane == 0) red[threadIdx.y * 32 + warp] = v;
    __syncthreads();
    float s = 0.f;
    for (int w = 0; w < nw; ++w) s += red[threadIdx.y * 32 + w];
    __syncthreads();
    return s;
}

// ---------------------------------------------------------------------------------------
// steer-add: out[r, :] = x[r, :] + coef_b * vecs[idx_b, :] on active rows
// (in place when out == nullptr: x is written).
// idx == nullptr: every row uses vector 0 with coefficient coef0.
// ---------------------------------------------------------------------------------------
template <typename T>
__device__ void steer_add_impl(T *x, RowGeom xg, T *out, PosSel ps, const uint32_t *idx,
                               const float *coef, float coef0, const float *vecs) {
    i64 r = (i64)blockIdx.x * blockDim.y + threadIdx.y;
    if (r >= xg.n_rows) return;
    i64 b = r / ps.t_len;
    bool act = ps.active(r);
    uint32_t k = 0;
    float c = coef0;
    if (idx) {
        k = idx[b];
        c = coef[b];
        if (k == 0xffffffffu) act = false;
    }
    T *xr = x + xg.row(r);
    const float *v = vecs + (i64)k * xg.d;
    if (out == nullptr) {
        if (!act) return;
        for (i64 j = threadIdx.x; j < xg.d; j += blockDim.x) {
            T *p = xr + j * xg.sd;
            *p = from_f<T>(to_f(*p) + c * v[j]);
        }
    } else {
        T *o = out + r * xg.d;
        if (act) {
            for (i64 j = threadIdx.x; j < xg.d; j += blockDim.x)
                o[j] = from_f<T>(to_f(xr[j * xg.sd]) + c * v[j]);
        } else {
            for (i64 j = threadIdx.x; j < xg.d; j += blockDim.x) o[j] = xr[j * xg.sd];
        }
    }
}

// ---------------------------------------------------------------------------------------
// patch: out[r, lo:hi] = (1 - a) x + a src on active rows (alpha == 1: copy)
// ---------------------------------------------------------------------------------------
template <typename T>
__device__ void patch_impl(T *x, RowGeom xg, const T *src, RowGeom sg, T *out, PosSel ps,
                           i64 lo, i64 hi, float alpha) {
    i64 r = (i64)blockIdx.x * blockDim.y + threadIdx.y;
    if (r >= xg.n_rows) return;
    bool act = ps.active(r);
    T *xr = x + xg.row(r);
    const T *sr = src + sg.row(r);
    if (out == nullptr) {
        if (!act) return;
        for (i64 j = lo + threadIdx.x; j < hi; j += blockDim.x) {
            T *p = xr + j * xg.sd;
            T s = sr[j * sg.sd];
            *p = alpha == 1.f ? s : from_f<T>((1.f - alpha) * to_f(*p) + alpha * to_f(s));
        }
    } else {
        T *o = out + r * xg.d;
        for (i64 j = threadIdx.x; j < xg.d; j += blockDim.x) {
            T xv = xr[j * xg.sd];
            if (act && j >= lo && j < hi) {
                T s = sr[j * sg.sd];
                o[j] = alpha == 1.f ? s : from_f<T>((1.f - alpha) * to_f(xv) + alpha * to_f(s));
            } else {
                o[j] = xv;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// row ops with a reduction: op 0 = ablate (x -= (x.u / u.u) u), op 1 = norm-preserving
// steer ((x + a v) * |x| / |x + a v|). `u` is f32, contiguous, length d.
// ---------------------------------------------------------------------------------------
template <typename T>
__device__ void rowop_impl(int op, T *x, RowGeom xg, T *out, const float *u, float alpha) {
    __shared__ float red[8 * 32];
    i64 r = (i64)blockIdx.x * blockDim.y + threadIdx.y;
    bool live = r < xg.n_rows;
    T *xr = live ? x + xg.row(r) : x;
    float a0 = 0.f, a1 = 0.f;
    if (live) {
        for (i64 j = threadIdx.x; j < xg.d; j += blockDim.x) {
            float xv = to_f(xr[j * xg.sd]);
            if (op == 0) {
                a0 += xv * u[j];
                a1 += u[j] * u[j];
            } else {
                float y = xv + alpha * u[j];
                a0 += xv * xv;
                a1 += y * y;
            }
        }
    }
    a0 = row_sum(a0, red);
    a1 = row_sum(a1, red);
    if (!live) return;
    T *o = out ? out + r * xg.d : xr;
    i64 osd = out ? 1 : xg.sd;
    if (op == 0) {
        float p = a1 > 0.f ? a0 / a1 : 0.f;
        for (i64 j = threadIdx.x; j < xg.d; j += blockDim.x)
            o[j * osd] = from_f<T>(to_f(xr[j * xg.sd]) - p * u[j]);
    } else {
        float s = a1 > 0.f ? sqrtf(a0 / a1) : 0.f;
        for (i64 j = threadIdx.x; j < xg.d; j += blockDim.x)
            o[j * osd] = from_f<T>((to_f(xr[j * xg.sd]) + alpha * u[j]) * s);
    }
}

#define ROWGEOM_ARGS i64 n_rows, i64 inner, i64 s_outer, i64 s_inner, i64 d, i64 sd, const i64 *offs
#define ROWGEOM(p) RowGeom{n_rows, p##inner, p##s_outer, p##s_inner, d, p##sd, p##offs}
#define POS_ARGS i64 t_len, int pos_kind, i64 pos_start, i64 pos_end, const uint8_t *mask
#define POS PosSel{t_len, pos_kind, pos_start, pos_end, mask}

#define INSTANTIATE(T, SUF)                                                                    \
    extern "C" __global__ void steer_add_##SUF(T *x, ROWGEOM_ARGS, T *out, POS_ARGS,           \
                                               const uint32_t *idx, const float *coef,         \
                                               float coef0, const float *vecs) {               \
        RowGeom g{n_rows, inner, s_outer, s_inner, d, sd, offs};                               \
        steer_add_impl<T>(x, g, out, POS, idx, coef, coef0, vecs);                             \
    }                                                                                          \
    extern "C" __global__ void patch_##SUF(T *x, ROWGEOM_ARGS, const T *src, i64 s_inner_len,  \
                                           i64 s_s_outer, i64 s_s_inner, i64 s_sd,             \
                                           const i64 *s_offs, T *out, POS_ARGS, i64 lo,        \
                                           i64 hi, float alpha) {                              \
        RowGeom g{n_rows, inner, s_outer, s_inner, d, sd, offs};                               \
        RowGeom sg{n_rows, s_inner_len, s_s_outer, s_s_inner, d, s_sd, s_offs};                \
        patch_impl<T>(x, g, src, sg, out, POS, lo, hi, alpha);                                 \
    }                                                                                          \
    extern "C" __global__ void rowop_##SUF(int op, T *x, ROWGEOM_ARGS, T *out, const float *u, \
                                           float alpha) {                                      \
        RowGeom g{n_rows, inner, s_outer, s_inner, d, sd, offs};                               \
        rowop_impl<T>(op, x, g, out, u, alpha);                                                \
    }

INSTANTIATE(float, f32)
INSTANTIATE(__half, f16)
INSTANTIATE(__nv_bfloat16, bf16)

// ---------------------------------------------------------------------------------------
// Fused logistic pass. X: [K, N, D] f32 contiguous; theta: [K, D+1] (w, b); y: [N];
// active: [A] probe ids. Block (256 threads) = (chunk c = blockIdx.x, active a = blockIdx.y):
//   phase 1: each warp computes z_i = x_i . w + b for rows of the chunk (warp shuffle),
//            r_i = sigmoid(z_i) - y_i and the row loss, kept in shared memory;
//   phase 2: thread j accumulates sum_i r_i x_ij for its columns (rows re-read from L1/L2).
// Writes gpart[a, c, 0..D] (the row sum of r_i x_i), gpart[a, c, D] = sum r_i and
// lpart[a, c] = sum of row losses, all in a fixed order (deterministic).
// ---------------------------------------------------------------------------------------
#define PROBE_ROWS 32

extern "C" __global__ void logistic_pass_f32(const float *X, const float *theta, const float *y,
                                             const uint32_t *active, i64 N, i64 D,
                                             float *gpart, double *lpart) {
    __shared__ float rbuf[PROBE_ROWS];
    __shared__ float lbuf[PROBE_ROWS];
    const i64 c = blockIdx.x, a = blockIdx.y, n_chunks = gridDim.x;
    const i64 k = active[a];
    const float *w = theta + k * (D + 1);
    const float b = w[D];
    const float *Xk = X + k * N * D;
    const i64 i0 = c * PROBE_ROWS;
    const int rows = (int)min((i64)PROBE_ROWS, N - i0);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int q = warp; q < rows; q += nw) {
        const float *xr = Xk + (i0 + q) * D;
        float s = 0.f;
        for (i64 j = lane; j < D; j += 32) s += xr[j] * w[j];
        s = warp_sum(s);
        if (lane == 0) {
            float z = s + b, yi = y[i0 + q];
            float sg = z >= 0.f ? 1.f / (1.f + expf(-z)) : expf(z) / (1.f + expf(z));
            rbuf[q] = sg - yi;
            lbuf[q] = fmaxf(z, 0.f) + log1pf(expf(-fabsf(z))) - yi * z;
        }
    }
    __syncthreads();
    float *gp = gpart + (a * n_chunks + c) * (D + 1);
    for (i64 j = threadIdx.x; j < D; j += blockDim.x) {
        float g = 0.f;
        for (int q = 0; q < rows; ++q) g += rbuf[q] * Xk[(i0 + q) * D + j];
        gp[j] = g;
    }
    if (threadIdx.x == 0) {
        float gb = 0.f;
        double l = 0.0;
        for (int q = 0; q < rows; ++q) {
            gb += rbuf[q];
            l += (double)lbuf[q];
        }
        gp[D] = gb;
        lpart[a * n_chunks + c] = l;
    }
}

// grad[a, j] = sum over chunks c (in order) of gpart[a, c, j], in double.
extern "C" __global__ void logistic_reduce_f32(const float *gpart, i64 n_chunks, i64 Dp,
                                               double *grad) {
    const i64 a = blockIdx.y;
    const i64 j = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= Dp) return;
    double s = 0.0;
    for (i64 c = 0; c < n_chunks; ++c) s += (double)gpart[(a * n_chunks + c) * Dp + j];
    grad[a * Dp + j] = s;
}
