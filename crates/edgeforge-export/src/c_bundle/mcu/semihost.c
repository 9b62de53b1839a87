/* Arm semihosting calls used by the MCU check: SYS_WRITE0 (0x04) and SYS_EXIT_EXTENDED (0x20). */
#include <stdint.h>
#include "semihost.h"

static uint32_t ef_semihost(uint32_t op, const void *arg) {
    register uint32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void ef_semihost_puts(const char *s) {
    (void)ef_semihost(0x04u, s);
}

void ef_semihost_exit(int status) {
    /* ADP_Stopped_ApplicationExit with the status: QEMU exits with it. */
    const uint32_t block[2] = {0x20026u, (uint32_t)status};
    (void)ef_semihost(0x20u, block);
    for (;;) {
    }
}
