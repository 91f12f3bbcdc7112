/*
 * The scaled forward-backward recursion of pyroem/ops/scaled.py, one chain after the
 * other, one frame at a time: for chains with few states (K <= 8) a frame is a few dozen
 * multiply-adds, far less than the cost of one torch operation, so a compiled loop beats
 * any vectorised formulation. Loaded by pyroem/ops/compiled.py (ctypes); the pure-torch
 * recursions remain the reference and the fallback.
 *
 * Per chain of n frames, with e_t(k) = exp(l_t(k) - m_t), m_t the finite maximum of l_t:
 *   alpha_0 = pi * e_0 / c_0,  alpha_t = (A^T alpha_{t-1}) * e_t / c_t,
 *   log p = sum_t m_t + sum_t log c_t (+ log sum_F alpha_{n-1} with final states F);
 *   beta_{n-1} = 1 (or 1_F / sum_F alpha_{n-1}),
 *   u_t = min(e_t * beta_t / c_t, BIG),  beta_{t-1} = min(A u_t, BIG),
 *   gamma_t = alpha_t * beta_t,  pairs += alpha_{t-1} u_t^T,  xi = A * pairs (0 where A is 0).
 * Below float64 (RENORM) gamma_t and u_t are divided by n_t = sum_k gamma_t(k), as the
 * torch recursion does against the drift of the rounded c_t. Frames beyond n get gamma 0.
 * The sums of logs and the pair counts accumulate in double; float32 exponentiates in
 * float32 (expf). Subnormals are flushed to zero while the kernel runs (FLUSH_BEGIN/END:
 * the calling thread's mode saved and restored, as pyroem/ops/denormals.py does for the
 * torch recursions) where the CPU has such a mode; scaled_chain_flushes() says whether.
 *
 * Emissions come dense, le (B, T, K) log-densities, or (sym != NULL) as symbols
 * sym (B, T) indexing a table: le (M, K) the scaled e of each symbol and mtab (M,) its
 * offset m, so that a categorical emission needs no exp and no (B, T, K) tensor at all.
 */
#include <math.h>
#include <stdint.h>
#include <float.h>

#define MAXK 16

/* Flush-to-zero and denormals-are-zero for the duration of a call (x86 MXCSR bits 15 and
 * 6, aarch64 FPCR bit 24): a product of tiny alphas would otherwise take the slow
 * subnormal path. Setting the mode here spares the caller two torch calls per E-step. */
#if defined(__SSE2__) || defined(__x86_64__)
#include <xmmintrin.h>
#define FLUSH_BEGIN unsigned int saved_mode_ = _mm_getcsr(); _mm_setcsr(saved_mode_ | 0x8040u);
#define FLUSH_END _mm_setcsr(saved_mode_);
#define FLUSHES 1
#elif defined(__aarch64__)
#define FLUSH_BEGIN uint64_t saved_mode_; __asm__ volatile("mrs %0, fpcr" : "=r"(saved_mode_)); \
    __asm__ volatile("msr fpcr, %0" : : "r"(saved_mode_ | (1ull << 24)));
#define FLUSH_END __asm__ volatile("msr fpcr, %0" : : "r"(saved_mode_));
#define FLUSHES 1
#else
#define FLUSH_BEGIN
#define FLUSH_END
#define FLUSHES 0
#endif

int scaled_chain_flushes(void) { return FLUSHES; }
#define CASE(NAME, KK)                                                                      \
    case KK: NAME##_k(B, T, KK, le, sym, mtab, lengths, log_start, trans, final_w, gamma,   \
                      fw, scale, xi, log_ev); break;

#define DEFINE_CHAIN(NAME, REAL, TINY, BIG, RENORM, EXP, PAIRS)                                 \
static inline __attribute__((always_inline)) void                                              \
NAME##_k(int64_t B, int64_t T, const int64_t K, const REAL *le, const int64_t *sym,            \
       const REAL *mtab, const int64_t *lengths, const REAL *log_start, const REAL *trans,     \
       const REAL *final_w, REAL *gamma, REAL *fw, REAL *scale, REAL *xi, double *log_ev)      \
{                                                                                              \
    REAL start[MAXK], a[MAXK], b[MAXK], u[MAXK], at[MAXK * MAXK], blk[MAXK * MAXK] = {0};      \
    double acc[MAXK * MAXK] = {0};  /* the pair counts, local: kept out of memory */           \
    int64_t inblock = 0;                                                                       \
    for (int64_t k = 0; k < K; k++) start[k] = (REAL)exp((double)log_start[k]);                \
    for (int64_t i = 0; i < K; i++)  /* A^T: the backward reads A by columns */                \
        for (int64_t j = 0; j < K; j++) at[j * K + i] = trans[i * K + j];                      \
    for (int64_t c = 0; c < B; c++) {                                                          \
        REAL *g = gamma + c * T * K;                                                           \
        const int64_t *sc = sym ? sym + c * T : 0;                                             \
        int64_t n = lengths[c];                                                                \
        double ll = 0.0, prod = 1.0;                                                           \
        /* forward; dense emissions: the scaled e_t kept in gamma until the backward */        \
        for (int64_t t = 0; t < n; t++) {                                                      \
            REAL *ft = fw + t * K, m;                                                          \
            const REAL *et;                                                                    \
            if (sc) {  /* a symbol: its row of the scaled table and its offset */              \
                et = le + sc[t] * K;                                                           \
                m = mtab[sc[t]];                                                               \
            } else {                                                                           \
                const REAL *lt = le + (c * T + t) * K;                                         \
                REAL *e = g + t * K;                                                           \
                m = lt[0];                                                                     \
                for (int64_t k = 1; k < K; k++) if (lt[k] > m) m = lt[k];                      \
                if (!isfinite(m)) m = 0;                                                       \
                for (int64_t k = 0; k < K; k++) e[k] = EXP(lt[k] - m);                   \
                et = e;                                                                        \
            }                                                                                  \
            ll += (double)m;                                                                   \
            /* p = A^T alpha_{t-1}, row by row of A: contiguous, vectorised over k; each p[k]  \
               sums over i in the same order as a column loop would */                         \
            REAL p[MAXK], s = 0;                                                               \
            for (int64_t k = 0; k < K; k++) p[k] = t == 0 ? start[k] : 0;                      \
            for (int64_t i = 0; t > 0 && i < K; i++) {                                         \
                REAL f = fw[(t - 1) * K + i];                                                  \
                for (int64_t k = 0; k < K; k++) p[k] += trans[i * K + k] * f;                  \
            }                                                                                  \
            for (int64_t k = 0; k < K; k++) {                                                  \
                ft[k] = p[k] * et[k];                                                          \
                s += ft[k];                                                                    \
            }                                                                                  \
            scale[t] = s;                                                                      \
            REAL r = 1 / (s > TINY ? s : TINY);                                                \
            for (int64_t k = 0; k < K; k++) ft[k] *= r;                                        \
            /* log c_t summed as a product: one log per ~250 orders of magnitude */            \
            if (s < 1e-30) ll += log((double)s);                                               \
            else if ((prod *= s) < 1e-250) { ll += log(prod); prod = 1.0; }                    \
        }                                                                                      \
        ll += log(prod);                                                                       \
        if (final_w) {                                                                         \
            REAL end = 0;                                                                      \
            for (int64_t k = 0; k < K; k++) end += final_w[k] * fw[(n - 1) * K + k];           \
            ll += log((double)end);                                                            \
            REAL r = end > 0 ? 1 / (end > TINY ? end : TINY) : 0;                              \
            for (int64_t k = 0; k < K; k++) b[k] = final_w[k] * r;                             \
        } else {                                                                               \
            for (int64_t k = 0; k < K; k++) b[k] = 1;                                          \
        }                                                                                      \
        log_ev[c] = ll;                                                                        \
        /* backward, gamma and the pair counts */                                              \
        for (int64_t t = n - 1; t >= 0; t--) {                                                 \
            REAL *gt = g + t * K;                                                              \
            const REAL *ft = fw + t * K;                                                       \
            const REAL *et = sc ? le + sc[t] * K : gt;                                         \
            REAL st = scale[t];                                                                \
            REAL inv = st > 0 ? 1 / (st > TINY ? st : TINY) : 0;                               \
            REAL norm = 0;                                                                     \
            for (int64_t k = 0; k < K; k++) {                                                  \
                REAL v = et[k] * b[k] * inv;                                                   \
                u[k] = v < BIG ? v : BIG;                                                      \
                gt[k] = ft[k] * b[k];                                                          \
                norm += gt[k];                                                                 \
            }                                                                                  \
            if (RENORM) {                                                                      \
                REAL r = norm > 0 ? 1 / (norm > TINY ? norm : TINY) : 0;                       \
                for (int64_t k = 0; k < K; k++) { gt[k] *= r; u[k] *= r; }                     \
            }                                                                                  \
            if (t == 0) break;                                                                 \
            const REAL *fp = fw + (t - 1) * K;                                                 \
            /* pair counts alpha_{t-1} u_t^T, vectorised over rows: in double directly, or     \
               (PAIRS > 1, float32) in the working dtype over PAIRS frames, then in double */  \
            REAL *pc = PAIRS == 1 ? 0 : blk;                                                   \
            for (int64_t i = 0; i < K; i++)                                                    \
                for (int64_t j = 0; j < K; j++) {                                              \
                    if (PAIRS == 1) acc[i * K + j] += (double)(fp[i] * u[j]);                  \
                    else pc[i * K + j] += fp[i] * u[j];                                        \
                }                                                                              \
            if (PAIRS > 1 && ++inblock == PAIRS) {                                             \
                for (int64_t i = 0; i < K * K; i++) { acc[i] += blk[i]; blk[i] = 0; }          \
                inblock = 0;                                                                   \
            }                                                                                  \
            /* beta_{t-1} = A u_t, by columns of A^T (contiguous, vectorised over i) */        \
            for (int64_t i = 0; i < K; i++) a[i] = 0;                                          \
            for (int64_t j = 0; j < K; j++)                                                    \
                for (int64_t i = 0; i < K; i++) a[i] += at[j * K + i] * u[j];                  \
            for (int64_t k = 0; k < K; k++) b[k] = a[k] < BIG ? a[k] : BIG;                    \
        }                                                                                      \
        for (int64_t t = n; t < T; t++)                                                        \
            for (int64_t k = 0; k < K; k++) g[t * K + k] = 0;                                  \
    }                                                                                          \
    for (int64_t i = 0; i < K * K; i++) acc[i] += blk[i];                                      \
    /* pairs may be inf where A is zero: xi is 0 there */                                      \
    for (int64_t i = 0; i < K * K; i++) xi[i] = trans[i] > 0 ? (REAL)(trans[i] * acc[i]) : 0;  \
}                                                                                              \
                                                                                               \
/* K a compile-time constant in each case (1-8, 16): loops unrolled, vectors in registers */        \
void NAME(int64_t B, int64_t T, int64_t K, const REAL *le, const int64_t *sym,                 \
          const REAL *mtab, const int64_t *lengths, const REAL *log_start, const REAL *trans,  \
          const REAL *final_w, REAL *gamma, REAL *fw, REAL *scale, REAL *xi,                   \
          double *log_ev)                                                                      \
{                                                                                              \
    FLUSH_BEGIN                                                                                \
    switch (K) {                                                                               \
    CASE(NAME, 1) CASE(NAME, 2) CASE(NAME, 3) CASE(NAME, 4)                                    \
    CASE(NAME, 5) CASE(NAME, 6) CASE(NAME, 7) CASE(NAME, 8) CASE(NAME, 16)                     \
    default: NAME##_k(B, T, K, le, sym, mtab, lengths, log_start, trans, final_w, gamma,       \
                      fw, scale, xi, log_ev);                                                  \
    }                                                                                          \
    FLUSH_END                                                                                  \
}


DEFINE_CHAIN(scaled_chain_f64, double, DBL_MIN, DBL_MAX, 0, exp, 1)
DEFINE_CHAIN(scaled_chain_f32, float, FLT_MIN, FLT_MAX, 1, expf, 32)
