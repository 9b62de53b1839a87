/* Arm semihosting (bkpt 0xAB): text to the host's console and the exit status, nothing else. */
#ifndef EF_SEMIHOST_H
#define EF_SEMIHOST_H

void ef_semihost_puts(const char *s);
void ef_semihost_exit(int status) __attribute__((noreturn));

#endif
