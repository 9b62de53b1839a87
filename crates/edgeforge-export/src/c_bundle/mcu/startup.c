/* Cortex-M startup for the edgeforge C bundle: vector table, copy .data from flash, zero .bss, enable the FPU,
 * count SysTick wraps (the cycle counter of mcu_main.c), run main, leave through semihosting. No libc start
 * files and no heap. */
#include <stdint.h>
#include "semihost.h"

extern uint32_t __data_start__, __data_end__, __data_load__, __bss_start__, __bss_end__, __stack;
int main(void);

#define EF_CPACR (*(volatile uint32_t *)0xE000ED88u)

volatile uint32_t ef_systick_wraps;

void ef_reset_handler(void);
static void ef_fault_handler(void);
static void ef_systick_handler(void);

typedef void (*ef_vector)(void);

__attribute__((section(".vectors"), used)) static const ef_vector ef_vectors[16] = {
    (ef_vector)(uintptr_t)&__stack, ef_reset_handler, ef_fault_handler, ef_fault_handler,
    ef_fault_handler, ef_fault_handler, ef_fault_handler, 0, 0, 0, 0, ef_fault_handler,
    ef_fault_handler, 0, ef_fault_handler, ef_systick_handler,
};

void ef_reset_handler(void) {
    uint32_t *src = &__data_load__, *dst;
    /* CP10 and CP11 full access: float instructions fault until this is set. */
    EF_CPACR |= 0xFu << 20;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    for (dst = &__data_start__; dst < &__data_end__;) {
        *dst++ = *src++;
    }
    for (dst = &__bss_start__; dst < &__bss_end__;) {
        *dst++ = 0;
    }
    ef_semihost_exit(main());
}

static void ef_fault_handler(void) {
    ef_semihost_puts("edgeforge: hard fault\n");
    ef_semihost_exit(3);
}

static void ef_systick_handler(void) {
    ef_systick_wraps++;
}
