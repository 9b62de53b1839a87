/* The bundle's check on a microcontroller (or an emulated one): run the prompt compiled in as EF_PROMPT
 * (comma-separated token ids), print every prompt position's logits as the hex bits of each float, then
 * EF_N_GEN greedy tokens, and the SysTick cycles each ef_forward took. Output through semihosting:
 *   L <pos> <hex> <hex> ...       logits after prompt position pos
 *   G <id> <id> ...               generated ids
 *   C <cycles> <cycles> ...       SysTick counts per ef_forward call (prompt, then generated tokens) */
#include <stdint.h>
#include "edgeforge_model.h"
#include "semihost.h"

#ifndef EF_PROMPT
#define EF_PROMPT 1
#endif
#ifndef EF_N_GEN
#define EF_N_GEN 4
#endif

#define EF_SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define EF_SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define EF_SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define EF_SYST_RELOAD 0xFFFFFFu

extern volatile uint32_t ef_systick_wraps;

static const int ef_prompt[] = {EF_PROMPT};
#define EF_N_PROMPT ((int)(sizeof(ef_prompt) / sizeof(ef_prompt[0])))
static float ef_logits[EF_VOCAB];
static uint32_t ef_cycles[EF_N_PROMPT + EF_N_GEN];
static char ef_line[16];

/* SysTick counts down from EF_SYST_RELOAD on the core clock; the handler counts wraps. */
static uint64_t ef_now(void) {
    uint32_t wraps, value;
    do {
        wraps = ef_systick_wraps;
        value = EF_SYST_CVR;
    } while (wraps != ef_systick_wraps);
    return (uint64_t)wraps * (EF_SYST_RELOAD + 1u) + (EF_SYST_RELOAD - value);
}

/* Print ' ' then v in decimal, or as 8 hex digits. */
static void ef_put_uint(char tag, uint32_t v, int hex) {
    char *p = ef_line + sizeof(ef_line) - 1;
    int digits = 0;
    *p = '\0';
    do {
        uint32_t d = hex ? v % 16u : v % 10u;
        *--p = (char)(d < 10u ? '0' + d : 'a' + d - 10u);
        v = hex ? v / 16u : v / 10u;
        digits++;
    } while (v != 0u || (hex && digits < 8));
    *--p = tag;
    ef_semihost_puts(p);
}

static int ef_argmax(void) {
    int v, best = 0;
    for (v = 1; v < EF_VOCAB; v++) {
        if (ef_logits[v] > ef_logits[best]) {
            best = v;
        }
    }
    return best;
}

static int ef_step(int token, int pos) {
    uint64_t t0 = ef_now();
    int rc = ef_forward(token, pos, ef_logits);
    ef_cycles[pos] = (uint32_t)(ef_now() - t0);
    return rc;
}

int main(void) {
    int pos, i, v;
    EF_SYST_RVR = EF_SYST_RELOAD;
    EF_SYST_CVR = 0u;
    EF_SYST_CSR = 7u; /* core clock, interrupt on wrap, enabled */
    ef_reset();
    for (pos = 0; pos < EF_N_PROMPT; pos++) {
        if (ef_step(ef_prompt[pos], pos) != 0) {
            return 1;
        }
        ef_semihost_puts("L");
        ef_put_uint(' ', (uint32_t)pos, 0);
        for (v = 0; v < EF_VOCAB; v++) {
            union { float f; uint32_t u; } bits;
            bits.f = ef_logits[v];
            ef_put_uint(' ', bits.u, 1);
        }
        ef_semihost_puts("\n");
    }
    ef_semihost_puts("G");
    for (i = 0; i < EF_N_GEN && pos < EF_CTX; i++, pos++) {
        int next = ef_argmax();
        ef_put_uint(' ', (uint32_t)next, 0);
        if (ef_step(next, pos) != 0) {
            return 1;
        }
    }
    ef_semihost_puts("\nC");
    for (i = 0; i < pos; i++) {
        ef_put_uint(' ', ef_cycles[i], 0);
    }
    ef_semihost_puts("\n");
    return 0;
}
