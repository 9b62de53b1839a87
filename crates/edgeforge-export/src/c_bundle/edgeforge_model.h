/* edgeforge C bundle: a llama-architecture decoder for microcontrollers, C99, no malloc.
 * All working memory is one static arena sized when the bundle was exported (EF_ARENA_FLOATS). */
#ifndef EDGEFORGE_MODEL_H
#define EDGEFORGE_MODEL_H

#include <stdint.h>
#include "model_config.h"

/* Matrix storage kinds. */
#define EF_F32 0
#define EF_INT8 1
#define EF_INT4 2

/* A [rows x cols] row-major matrix: floats, or signed integer codes with one float scale per group of
 * `group` consecutive elements of a row (int4: two codes per byte, element 2j in the low nibble, stored
 * with an offset of 8). */
typedef struct {
    int kind;
    int rows, cols, group;
    const float *f;
    const int8_t *q8;
    const uint8_t *q4;
    const float *scales;
} ef_matrix;

typedef struct {
    int n_heads, n_kv_heads, n_ff;
    const float *attn_norm;
    ef_matrix wq, wk, wv, wo;
    const float *ffn_norm;
    ef_matrix gate, up, down;
} ef_layer;

extern const ef_layer ef_layers[EF_N_LAYERS];
extern const ef_matrix ef_token_embd;
extern const float ef_output_norm[EF_N_EMBD];
/* The output head; its `rows` is 0 when tied to the token embedding. */
extern const ef_matrix ef_output;

/* Forget the KV cache (start a new sequence). */
void ef_reset(void);

/* Run one token at position `pos` (0, 1, 2, ... in order; pos < EF_CTX). Writes EF_VOCAB logits when
 * `logits` is not NULL. Returns 0, or -1 for a bad token or position. */
int ef_forward(int token, int pos, float *logits);

#endif
