/* Cortex-M semihosting I/O (in.bin, out.bin in QEMU's working directory) and ticks of
 * the mps2 board's CMSDK APB timer 0 (32-bit down counter at the 25 MHz peripheral
 * clock); under `qemu-system-arm -icount shift=0` virtual time, hence the ticks,
 * advances with executed instructions (io_calibrate gives instructions per tick). */
#include "tc_io.h"

#define TIMER_CTRL (*(volatile uint32_t *)0x40000000u)
#define TIMER_VALUE (*(volatile uint32_t *)0x40000004u)
#define TIMER_RELOAD (*(volatile uint32_t *)0x40000008u)

static int in_h = -1, out_h = -1;

int tc_semihost(int op, void *arg)
{
    register int r0 __asm__("r0") = op;
    register void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static int sh_open(const char *name, int mode)
{
    uint32_t a[3];
    uint32_t len = 0;
    while (name[len]) len++;
    a[0] = (uint32_t)(uintptr_t)name; a[1] = (uint32_t)mode; a[2] = len;
    return tc_semihost(0x01, a);
}

int io_open(int argc, char **argv)
{
    (void)argc; (void)argv;
    in_h = sh_open("in.bin", 1);   /* "rb" */
    out_h = sh_open("out.bin", 5); /* "wb" */
    TIMER_RELOAD = 0xFFFFFFFFu;
    TIMER_VALUE = 0xFFFFFFFFu;
    TIMER_CTRL = 1u;               /* enable, no interrupt */
    return in_h < 0 || out_h < 0;
}

int io_read(void *buf, size_t n)
{
    uint32_t a[3];
    a[0] = (uint32_t)in_h; a[1] = (uint32_t)(uintptr_t)buf; a[2] = (uint32_t)n;
    return tc_semihost(0x06, a) != 0;
}

void io_write(const void *buf, size_t n)
{
    uint32_t a[3];
    a[0] = (uint32_t)out_h; a[1] = (uint32_t)(uintptr_t)buf; a[2] = (uint32_t)n;
    (void)tc_semihost(0x05, a);
}

void io_close(void)
{
    uint32_t a[1];
    a[0] = (uint32_t)in_h; (void)tc_semihost(0x02, a);
    a[0] = (uint32_t)out_h; (void)tc_semihost(0x02, a);
}

uint64_t io_ticks(void) { return 0xFFFFFFFFu - TIMER_VALUE; }

uint64_t io_calibrate(uint32_t loops)
{
    uint64_t t0 = io_ticks(), t1;
    __asm__ volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(loops) : : "cc");
    t1 = io_ticks();
    return t1 - t0;
}
