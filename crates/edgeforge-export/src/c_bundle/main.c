/* Demo and check: run prompt token ids through the model, write every position's logits (float32,
 * little-endian on little-endian hosts) to a file, then greedily generate tokens and print their ids.
 * Usage: ./edgeforge_demo LOGITS_OUT N_GENERATE TOKEN_ID...   */
#include <stdio.h>
#include <stdlib.h>
#include "edgeforge_model.h"

static float logits[EF_VOCAB];

int main(int argc, char **argv) {
    FILE *out;
    int i, n_gen, pos = 0, next = 0;
    if (argc < 4) {
        fprintf(stderr, "usage: %s LOGITS_OUT N_GENERATE TOKEN_ID...\n", argv[0]);
        return 2;
    }
    out = fopen(argv[1], "wb");
    if (out == NULL) {
        perror(argv[1]);
        return 2;
    }
    n_gen = atoi(argv[2]);
    ef_reset();
    for (i = 3; i < argc; i++, pos++) {
        if (ef_forward(atoi(argv[i]), pos, logits) != 0 || fwrite(logits, sizeof(float), EF_VOCAB, out) != EF_VOCAB) {
            fprintf(stderr, "bad token or position at prompt index %d\n", i - 3);
            fclose(out);
            return 1;
        }
    }
    fclose(out);
    for (i = 0; i < n_gen && pos < EF_CTX; i++, pos++) {
        int v;
        next = 0;
        for (v = 1; v < EF_VOCAB; v++) {
            if (logits[v] > logits[next]) {
                next = v;
            }
        }
        printf("%d%s", next, i + 1 < n_gen ? " " : "\n");
        if (ef_forward(next, pos, logits) != 0) {
            return 1;
        }
    }
    return 0;
}
