/*
 * One whole EM iteration of a hidden Markov model with diagonal (or spherical) Gaussian
 * emissions and few states, for small problems: the E-step of the other kernels of this
 * library (diag_log_prob, scaled_chain, own_mean_moments) and the closed-form M-step of
 * pyroem's torch route in the same call. Loaded by pyroem/ops/compiled_hmm.py; the
 * separate steps (pyroem/models/hmm/chain.py, pyroem/models/gaussian_emission.py) are the
 * reference, and tests/test_fused_step.py holds the two routes together.
 *
 * Parameters come as PyroModule stores them: the start and transition probabilities as
 * logarithms up to a constant per row (us, ut), p = exp(u - max u) / sum exp(u - max u);
 * the means; the logarithms of the standard deviations, (K, D), or (K,) when spherical.
 * dims = (B, T, K, D, spherical, flags); p holds the arrays' addresses (enum below).
 *
 * M-step, as the torch route:
 *   start, rows of trans (flags & 1, & 2):
 *     w = support ? max(counts + (alpha - 1), 0) : 0 (support: u > -inf; alpha the
 *     Dirichlet concentration, 1 for maximum likelihood), p = w / sum w, the old row
 *     where sum w = 0; written as log p.
 *   means, variances (flags & 4, & 8), from the moments about each state's own mean r:
 *     nk = n + 10 eps, xbar = sx / nk, mu = xbar (or the old mean - r when means are
 *     frozen), var = (sxx - 2 sx mu + n mu^2) / nk (averaged over D when spherical)
 *     + reg; written as means mu + r and log sqrt(var).
 * Returns 0; 1 where a variance is not positive, 2 where a new value is NaN or +inf (then
 * the caller runs the separate steps, which report it). Outputs of the E-step: gamma,
 * the log-densities le, log_ev, xi, the start counts, the old log start probabilities and
 * transition probabilities (for the guide's posterior chain).
 */
#include <math.h>
#include <stdint.h>
#include <float.h>

void diag_log_prob_f64(int64_t, int64_t, int64_t, const double *, const double *,
                       const double *, double *);
void diag_log_prob_f32(int64_t, int64_t, int64_t, const float *, const float *,
                       const float *, float *);
void own_mean_moments_f64(int64_t, int64_t, int64_t, int64_t, const double *, const double *,
                          double *, double *, double *, double *);
void own_mean_moments_f32(int64_t, int64_t, int64_t, int64_t, const float *, const float *,
                          float *, float *, float *, float *);
void scaled_chain_f64(int64_t, int64_t, int64_t, const double *, const int64_t *,
                      const double *, const int64_t *, const double *, const double *,
                      const double *, double *, double *, double *, double *, double *);
void scaled_chain_f32(int64_t, int64_t, int64_t, const float *, const int64_t *,
                      const float *, const int64_t *, const float *, const float *,
                      const float *, float *, float *, float *, float *, double *);

/* the arrays, by their index in the table of addresses p (NULL for the optional ones:
 * final_w): inputs, then the E-step's outputs, the working buffers of the
 * recursion and the M-step's outputs */
enum { X, LENGTHS, US, UT, FINAL_W, MEANS, LOG_SCALES, ALPHA_START, ALPHA_TRANS,
       LOG_START, TRANS, LE, GAMMA, FW, SCALE, XI, LOG_EV, START_COUNTS, NEW_US,
       NEW_UT, NEW_MEANS, NEW_LOG_SCALES, NUM_ARRAYS };

#define MAXS 16   /* states */
#define MAXD 64   /* dimensions */

#define DEFINE_STEP(SUFFIX, REAL, EPS)                                                         \
/* p = softmax(u) of one row of n, as the built-in simplex's transform */                      \
static void softmax_##SUFFIX(const REAL *u, REAL *p, int64_t n)                                \
{                                                                                              \
    REAL top = u[0], total = 0;                                                                \
    for (int64_t j = 1; j < n; j++) top = u[j] > top ? u[j] : top;                             \
    for (int64_t j = 0; j < n; j++) { p[j] = (REAL)exp((double)(u[j] - top)); total += p[j]; }  \
    for (int64_t j = 0; j < n; j++) p[j] /= total;                                             \
}                                                                                              \
                                                                                               \
/* the MAP row of map_probs (pyroem/models/hmm/probs.py), written as logarithms */            \
static int map_row_##SUFFIX(const REAL *counts, const REAL *alpha, const REAL *u,              \
                            const REAL *old, REAL *out, int64_t n)                             \
{                                                                                              \
    REAL w[MAXS], total = 0;                                                                   \
    for (int64_t j = 0; j < n; j++) {                                                          \
        REAL v = counts[j] + (alpha[j] - 1);  /* (alpha - 1) first, as the torch route */      \
        v = v > 0 ? v : 0;                                                                     \
        w[j] = u[j] > -INFINITY ? v : 0;                                                       \
        total += w[j];                                                                         \
    }                                                                                          \
    for (int64_t j = 0; j < n; j++) {                                                          \
        REAL p = total > 0 ? w[j] / total : old[j];                                            \
        out[j] = (REAL)log((double)p);                                                         \
        if (isnan(out[j]) || out[j] == INFINITY) return 2;                                     \
    }                                                                                          \
    return 0;                                                                                  \
}                                                                                              \
                                                                                               \
/* the Gaussian M-step of pyroem/models/gaussian_emission.py (diag, spherical) */              \
static int gauss_update_##SUFFIX(int64_t C, int64_t D, int64_t spherical, int64_t flags,     \
                                 REAL reg, const REAL *means, const REAL *n, const REAL *refs, \
                                 const REAL *sx, const REAL *sxx, REAL *new_means,             \
                                 REAL *new_log_scales)                                         \
{                                                                                              \
    for (int64_t c = 0; c < C; c++) {                                                          \
        REAL nk = n[c] + 10 * EPS, mu[MAXD], var[MAXD], mean_var = 0;                          \
        for (int64_t d = 0; d < D; d++) {                                                      \
            int64_t i = c * D + d;                                                             \
            mu[d] = (flags & 4) ? sx[i] / nk : means[i] - refs[i];                             \
            var[d] = (sxx[i] - 2 * sx[i] * mu[d] + n[c] * mu[d] * mu[d]) / nk;                  \
            mean_var += var[d];                                                                \
            if (flags & 4) {                                                                   \
                new_means[i] = mu[d] + refs[i];                                                \
                if (!isfinite(new_means[i])) return 2;                                         \
            }                                                                                  \
        }                                                                                      \
        if (!(flags & 8)) continue;                                                            \
        int64_t m = spherical ? 1 : D;                                                         \
        for (int64_t d = 0; d < m; d++) {                                                      \
            REAL v = (spherical ? mean_var / D : var[d]) + reg;                                \
            if (!(v > 0)) return 1;                                                            \
            new_log_scales[c * m + d] = (REAL)log((double)(REAL)sqrt((double)v));              \
            if (!isfinite(new_log_scales[c * m + d])) return 2;                                \
        }                                                                                      \
    }                                                                                          \
    return 0;                                                                                  \
}                                                                                              \
                                                                                               \
int gaussian_hmm_step_##SUFFIX(const int64_t *dims, double reg_, void *const *p)               \
{                                                                                              \
    const int64_t B = dims[0], T = dims[1], K = dims[2], D = dims[3], spherical = dims[4];     \
    const int64_t flags = dims[5];                                                             \
    const REAL reg = (REAL)reg_, *x = p[X], *us = p[US], *ut = p[UT], *means = p[MEANS];       \
    const REAL *log_scales = p[LOG_SCALES];                                                    \
    REAL *log_start = p[LOG_START], *trans = p[TRANS], *le = p[LE], *gamma = p[GAMMA];         \
    REAL *xi = p[XI], *start_counts = p[START_COUNTS], *at = p[ALPHA_TRANS];                   \
    REAL moments[MAXS * (1 + 3 * MAXD)];  /* n, refs, sx, sxx: the M-step's only */            \
    REAL scales[MAXS * MAXD];  /* the standard deviations, (K, D) */                           \
    for (int64_t c = 0; c < K; c++)                                                            \
        for (int64_t d = 0; d < D; d++)                                                        \
            scales[c * D + d] = (REAL)exp((double)log_scales[spherical ? c : c * D + d]);      \
    REAL start[MAXS] = {0};                                                                    \
    softmax_##SUFFIX(us, start, K);                                                            \
    for (int64_t k = 0; k < K; k++) log_start[k] = (REAL)log((double)start[k]);                \
    for (int64_t i = 0; i < K; i++) softmax_##SUFFIX(ut + i * K, trans + i * K, K);            \
    diag_log_prob_##SUFFIX(B * T, K, D, x, means, scales, le);                                 \
    scaled_chain_##SUFFIX(B, T, K, le, 0, 0, p[LENGTHS], log_start, trans, p[FINAL_W], gamma,  \
                          p[FW], p[SCALE], xi, p[LOG_EV]);                                     \
    for (int64_t k = 0; k < K; k++) {                                                          \
        REAL s = 0;                                                                            \
        for (int64_t b = 0; b < B; b++) s += gamma[b * T * K + k];                             \
        start_counts[k] = s;                                                                   \
    }                                                                                          \
    /* moments: n (K), refs (K, D), sx (K, D), sxx (K, D) in one buffer */                     \
    REAL *n = moments, *refs = moments + K, *sx = refs + K * D, *sxx = sx + K * D;             \
    own_mean_moments_##SUFFIX(B * T, K, D, 0, gamma, x, n, refs, sx, sxx);                     \
    int status = 0;                                                                            \
    if (flags & 1)                                                                             \
        status |= map_row_##SUFFIX(start_counts, p[ALPHA_START], us, start, p[NEW_US], K);     \
    for (int64_t i = 0; (flags & 2) && i < K; i++)                                             \
        status |= map_row_##SUFFIX(xi + i * K, at + i * K,                                     \
                                   ut + i * K, trans + i * K, (REAL *)p[NEW_UT] + i * K, K);   \
    if (status) return 2;                                                                      \
    if (flags & 12)                                                                            \
        return gauss_update_##SUFFIX(K, D, spherical, flags, reg, means, n, refs, sx, sxx,     \
                                     p[NEW_MEANS], p[NEW_LOG_SCALES]);                         \
    return 0;                                                                                  \
}

DEFINE_STEP(f64, double, DBL_EPSILON)
DEFINE_STEP(f32, float, FLT_EPSILON)
