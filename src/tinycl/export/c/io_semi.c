/* Cortex-M semihosting I/O (in.bin, out.bin in QEMU's working directory) and SysTick
 * ticks; under `qemu-system-arm -icount shift=0` ticks advance with executed instructions. */
#include "tc_io.h"

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)

static volatile uint32_t wraps;
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

void SysTick_Handler(void) { wraps++; }

int io_open(int argc, char **argv)
{
    (void)argc; (void)argv;
    in_h = sh_open("in.bin", 1);   /* "rb" */
    out_h = sh_open("out.bin", 5); /* "wb" */
    SYST_RVR = 0x00FFFFFFu;
    SYST_CVR = 0u;
    SYST_CSR = 7u;                 /* processor clock, interrupt, enable */
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

uint64_t io_ticks(void)
{
    uint32_t w, v;
    do { w = wraps; v = SYST_CVR; } while (w != wraps);
    return (uint64_t)w * 0x1000000u + (0x00FFFFFFu - v);
}

uint64_t io_calibrate(uint32_t loops)
{
    uint64_t t0 = io_ticks(), t1;
    __asm__ volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(loops) : : "cc");
    t1 = io_ticks();
    return t1 - t0;
}
