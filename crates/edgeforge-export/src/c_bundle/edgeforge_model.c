/* edgeforge C bundle inference: the same math as edgeforge's runtime (RMSNorm, rotary embeddings on
 * adjacent pairs, grouped-query causal attention, SwiGLU feed-forward, optionally tied output head), one
 * token at a time with a KV cache. No allocation: every buffer is a slice of one static arena. */
#include <math.h>
#include <stddef.h>
#include "edgeforge_model.h"

static float ef_arena[EF_ARENA_FLOATS];

/* Arena layout (floats). */
#define EF_KV_LAYER ((size_t)EF_CTX * EF_MAX_KV_WIDTH)
#define EF_OFF_K 0
#define EF_OFF_V (EF_OFF_K + (size_t)EF_N_LAYERS * EF_KV_LAYER)
#define EF_OFF_X (EF_OFF_V + (size_t)EF_N_LAYERS * EF_KV_LAYER)
#define EF_OFF_XN (EF_OFF_X + EF_N_EMBD)
#define EF_OFF_Q (EF_OFF_XN + EF_N_EMBD)
#define EF_OFF_ATT (EF_OFF_Q + EF_MAX_Q_WIDTH)
#define EF_OFF_SCORES (EF_OFF_ATT + EF_MAX_Q_WIDTH)
#define EF_OFF_H1 (EF_OFF_SCORES + EF_CTX)
#define EF_OFF_H2 (EF_OFF_H1 + EF_MAX_FF)
#define EF_OFF_TMP (EF_OFF_H2 + EF_MAX_FF)
#define EF_OFF_END (EF_OFF_TMP + EF_N_EMBD)

typedef char ef_arena_is_large_enough[(EF_OFF_END <= EF_ARENA_FLOATS) ? 1 : -1];

void ef_reset(void) {
    size_t i;
    for (i = 0; i < EF_OFF_X; i++) {
        ef_arena[i] = 0.0f;
    }
}

/* One element of row r. */
static float ef_at(const ef_matrix *m, int r, int c) {
    size_t i = (size_t)r * (size_t)m->cols + (size_t)c;
    int groups = (m->cols + m->group - 1) / m->group;
    float s;
    int q;
    if (m->kind == EF_F32) {
        return m->f[i];
    }
    s = m->scales[(size_t)r * (size_t)groups + (size_t)(c / m->group)];
    if (m->kind == EF_INT8) {
        q = m->q8[i];
    } else {
        q = (int)((m->q4[i / 2] >> ((i % 2) * 4)) & 15) - 8;
    }
    return s * (float)q;
}

/* y = W x for W [rows x cols]: per group, the integer codes times x summed, then times the scale. */
static void ef_matvec(const ef_matrix *m, const float *x, float *y) {
    int r, c, g;
    int groups = m->kind == EF_F32 ? 1 : (m->cols + m->group - 1) / m->group;
    for (r = 0; r < m->rows; r++) {
        float acc = 0.0f;
        if (m->kind == EF_F32) {
            const float *w = m->f + (size_t)r * (size_t)m->cols;
            for (c = 0; c < m->cols; c++) {
                acc += w[c] * x[c];
            }
        } else {
            for (g = 0; g < groups; g++) {
                int c0 = g * m->group;
                int c1 = c0 + m->group < m->cols ? c0 + m->group : m->cols;
                float part = 0.0f;
                for (c = c0; c < c1; c++) {
                    size_t i = (size_t)r * (size_t)m->cols + (size_t)c;
                    int q = m->kind == EF_INT8 ? m->q8[i] : (int)((m->q4[i / 2] >> ((i % 2) * 4)) & 15) - 8;
                    part += (float)q * x[c];
                }
                acc += part * m->scales[(size_t)r * (size_t)groups + (size_t)g];
            }
        }
        y[r] = acc;
    }
}

static void ef_rmsnorm(const float *x, const float *w, float *out) {
    double ss = 0.0;
    float scale;
    int i;
    for (i = 0; i < EF_N_EMBD; i++) {
        ss += (double)x[i] * (double)x[i];
    }
    scale = (float)(1.0 / sqrt(ss / EF_N_EMBD + (double)EF_RMS_EPS));
    for (i = 0; i < EF_N_EMBD; i++) {
        out[i] = x[i] * scale * w[i];
    }
}

/* Rotate dimensions (2i, 2i+1) of each head by pos * base^(-2i/head_dim). */
static void ef_rope(float *v, int n_heads, int pos) {
    int h, i;
    for (i = 0; i < EF_HEAD_DIM / 2; i++) {
        double theta = (double)pos * pow((double)EF_ROPE_BASE, -2.0 * i / EF_HEAD_DIM);
        float c = (float)cos(theta), s = (float)sin(theta);
        for (h = 0; h < n_heads; h++) {
            float *p = v + h * EF_HEAD_DIM + 2 * i;
            float a = p[0], b = p[1];
            p[0] = a * c - b * s;
            p[1] = a * s + b * c;
        }
    }
}

int ef_forward(int token, int pos, float *logits) {
    float *x = ef_arena + EF_OFF_X, *xn = ef_arena + EF_OFF_XN, *q = ef_arena + EF_OFF_Q;
    float *att = ef_arena + EF_OFF_ATT, *scores = ef_arena + EF_OFF_SCORES;
    float *h1 = ef_arena + EF_OFF_H1, *h2 = ef_arena + EF_OFF_H2, *tmp = ef_arena + EF_OFF_TMP;
    int l, i, h, t, d;
    if (token < 0 || token >= EF_VOCAB || pos < 0 || pos >= EF_CTX) {
        return -1;
    }
    for (i = 0; i < EF_N_EMBD; i++) {
        x[i] = ef_at(&ef_token_embd, token, i);
    }
    for (l = 0; l < EF_N_LAYERS; l++) {
        const ef_layer *L = &ef_layers[l];
        int kvw = L->n_kv_heads * EF_HEAD_DIM;
        int group = L->n_heads / L->n_kv_heads;
        float *kc = ef_arena + EF_OFF_K + (size_t)l * EF_KV_LAYER;
        float *vc = ef_arena + EF_OFF_V + (size_t)l * EF_KV_LAYER;
        float *k = kc + (size_t)pos * (size_t)kvw, *v = vc + (size_t)pos * (size_t)kvw;
        float inv_sqrt = (float)(1.0 / sqrt((double)EF_HEAD_DIM));

        ef_rmsnorm(x, L->attn_norm, xn);
        ef_matvec(&L->wq, xn, q);
        ef_matvec(&L->wk, xn, k);
        ef_matvec(&L->wv, xn, v);
        ef_rope(q, L->n_heads, pos);
        ef_rope(k, L->n_kv_heads, pos);
        for (h = 0; h < L->n_heads; h++) {
            const float *qh = q + h * EF_HEAD_DIM;
            int kvh = h / group;
            float max = -INFINITY, sum = 0.0f;
            float *out = att + h * EF_HEAD_DIM;
            for (t = 0; t <= pos; t++) {
                const float *kt = kc + (size_t)t * (size_t)kvw + (size_t)kvh * EF_HEAD_DIM;
                float s = 0.0f;
                for (d = 0; d < EF_HEAD_DIM; d++) {
                    s += qh[d] * kt[d];
                }
                scores[t] = s * inv_sqrt;
                if (scores[t] > max) {
                    max = scores[t];
                }
            }
            for (t = 0; t <= pos; t++) {
                scores[t] = (float)exp((double)(scores[t] - max));
                sum += scores[t];
            }
            for (d = 0; d < EF_HEAD_DIM; d++) {
                out[d] = 0.0f;
            }
            for (t = 0; t <= pos; t++) {
                const float *vt = vc + (size_t)t * (size_t)kvw + (size_t)kvh * EF_HEAD_DIM;
                float p = scores[t] / sum;
                for (d = 0; d < EF_HEAD_DIM; d++) {
                    out[d] += p * vt[d];
                }
            }
        }
        ef_matvec(&L->wo, att, tmp);
        for (i = 0; i < EF_N_EMBD; i++) {
            x[i] += tmp[i];
        }
        ef_rmsnorm(x, L->ffn_norm, xn);
        ef_matvec(&L->gate, xn, h1);
        ef_matvec(&L->up, xn, h2);
        for (i = 0; i < L->n_ff; i++) {
#if EF_ACT_RELU
            /* ReGLU: the model's gate activation is ReLU (after edgeforge's activation-swap pass). */
            h1[i] = (h1[i] > 0.0f ? h1[i] : 0.0f) * h2[i];
#else
            /* SwiGLU: silu(gate) * up, as the model was trained. */
            h1[i] = h1[i] / (1.0f + (float)exp(-(double)h1[i])) * h2[i];
#endif
        }
        ef_matvec(&L->down, h1, tmp);
        for (i = 0; i < EF_N_EMBD; i++) {
            x[i] += tmp[i];
        }
    }
    if (logits != NULL) {
        ef_rmsnorm(x, ef_output_norm, xn);
        ef_matvec(ef_output.rows > 0 ? &ef_output : &ef_token_embd, xn, logits);
    }
    return 0;
}
