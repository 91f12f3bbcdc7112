/*
 * Gaussian work per frame for small problems (few frames, states and dimensions), where
 * one torch operation costs more than the arithmetic: pyroem/models/gaussian_direct.py's
 * log-densities and moments in one pass each. Loaded by pyroem/ops/compiled_gaussian.py
 * (ctypes) from the same library as scaled_chain.c; the torch formulas remain the
 * reference and the fallback.
 *
 * diag_log_prob: out (R, C) = log N(x_r | mu_c, diag(s_c^2))
 *     = -1/2 sum_d ((x_rd - mu_cd) / s_cd)^2 - sum_d log s_cd - D/2 log(2 pi).
 * own_mean_moments: for weights w (R, C) and data x (R, D), each component's moments
 *     about its own weighted mean (two passes, as scikit-learn's covariances):
 *     n_c = sum_r w_rc,  m_c = sum_r w_rc x_r / (n_c + 10 eps),
 *     s_c = sum_r w_rc (x_r - m_c),  S_c = sum_r w_rc (x_r - m_c)(x_r - m_c)^T (full)
 *     or its diagonal. Sums accumulate in double in both dtypes.
 */
#include <math.h>
#include <stdint.h>
#include <float.h>

#define DEFINE_GAUSSIAN(SUFFIX, REAL, EPS)                                                     \
void diag_log_prob_##SUFFIX(int64_t R, int64_t C, int64_t D, const REAL *x, const REAL *mu,   \
                            const REAL *s, REAL *out)                                         \
{                                                                                             \
    const double half_log_2pi = 0.91893853320467274178;                                       \
    for (int64_t c = 0; c < C; c++) {                                                          \
        double cst = -D * half_log_2pi;                                                       \
        for (int64_t d = 0; d < D; d++) cst -= log((double)s[c * D + d]);                      \
        for (int64_t r = 0; r < R; r++) {                                                      \
            double q = 0;                                                                     \
            for (int64_t d = 0; d < D; d++) {                                                  \
                double z = ((double)x[r * D + d] - mu[c * D + d]) / s[c * D + d];             \
                q += z * z;                                                                   \
            }                                                                                 \
            out[r * C + c] = (REAL)(cst - 0.5 * q);                                           \
        }                                                                                     \
    }                                                                                         \
}                                                                                             \
                                                                                              \
void own_mean_moments_##SUFFIX(int64_t R, int64_t C, int64_t D, int64_t full, const REAL *w,  \
                               const REAL *x, REAL *n, REAL *refs, REAL *sx, REAL *sxx)       \
{                                                                                             \
    int64_t Q = full ? D * D : D;                                                             \
    for (int64_t c = 0; c < C; c++) {                                                          \
        double nc = 0;                                                                        \
        for (int64_t d = 0; d < D; d++) refs[c * D + d] = 0;                                   \
        for (int64_t r = 0; r < R; r++) nc += w[r * C + c];                                    \
        for (int64_t d = 0; d < D; d++) {                                                      \
            double m = 0;                                                                     \
            for (int64_t r = 0; r < R; r++) m += (double)w[r * C + c] * x[r * D + d];          \
            refs[c * D + d] = (REAL)(m / (nc + 10 * (double)EPS));                            \
        }                                                                                     \
        n[c] = (REAL)nc;                                                                      \
        for (int64_t d = 0; d < D; d++) sx[c * D + d] = 0;                                     \
        for (int64_t q = 0; q < Q; q++) sxx[c * Q + q] = 0;                                    \
    }                                                                                         \
    double diff[64], acc1[64], acc2[64 * 64];                                                 \
    for (int64_t c = 0; c < C; c++) {                                                          \
        for (int64_t d = 0; d < D; d++) acc1[d] = 0;                                           \
        for (int64_t q = 0; q < Q; q++) acc2[q] = 0;                                           \
        for (int64_t r = 0; r < R; r++) {                                                      \
            double wr = w[r * C + c];                                                         \
            if (wr == 0) continue;                                                            \
            for (int64_t d = 0; d < D; d++) {                                                  \
                diff[d] = (double)x[r * D + d] - refs[c * D + d];                             \
                acc1[d] += wr * diff[d];                                                      \
            }                                                                                 \
            if (full) {                                                                       \
                for (int64_t d = 0; d < D; d++)                                                \
                    for (int64_t e = 0; e < D; e++) acc2[d * D + e] += wr * diff[d] * diff[e]; \
            } else {                                                                          \
                for (int64_t d = 0; d < D; d++) acc2[d] += wr * diff[d] * diff[d];             \
            }                                                                                 \
        }                                                                                     \
        for (int64_t d = 0; d < D; d++) sx[c * D + d] = (REAL)acc1[d];                         \
        for (int64_t q = 0; q < Q; q++) sxx[c * Q + q] = (REAL)acc2[q];                        \
    }                                                                                         \
}

DEFINE_GAUSSIAN(f64, double, DBL_EPSILON)
DEFINE_GAUSSIAN(f32, float, FLT_EPSILON)
