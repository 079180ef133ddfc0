/* Test-program I/O: host files or Arm semihosting, and an instruction clock. */
#ifndef TC_IO_H
#define TC_IO_H
#include <stddef.h>
#include <stdint.h>
int io_open(int argc, char **argv);     /* 0 on success */
int io_read(void *buf, size_t n);       /* 0 when all n bytes were read */
void io_write(const void *buf, size_t n);
void io_close(void);
uint64_t io_ticks(void);                /* a free-running tick count (0 on the host) */
uint64_t io_calibrate(uint32_t loops);  /* ticks taken by 2 * loops instructions (0 on the host) */
#endif
