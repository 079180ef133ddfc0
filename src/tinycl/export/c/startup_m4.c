/* Minimal Cortex-M4F start-up for QEMU's mps2-an386: vector table, .data/.bss set-up,
 * FPU enabled, main(), exit through semihosting SYS_EXIT_EXTENDED. */
#include <stdint.h>

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
int main(int argc, char **argv);
int tc_semihost(int op, void *arg);
void Reset_Handler(void);
void Fault_Handler(void);

static void sh_exit(int code)
{
    uint32_t a[2];
    a[0] = 0x20026u;                /* ADP_Stopped_ApplicationExit */
    a[1] = (uint32_t)code;
    for (;;) (void)tc_semihost(0x20, a);
}

void Fault_Handler(void) { sh_exit(99); }

void Reset_Handler(void)
{
    uint32_t *s = &_sidata, *d = &_sdata;
    while (d < &_edata) *d++ = *s++;
    for (d = &_sbss; d < &_ebss;) *d++ = 0u;
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20;   /* CPACR: CP10, CP11 full access */
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    sh_exit(main(0, 0));
}

__attribute__((section(".isr_vector"), used))
void (*const tc_vectors[16])(void) = {
    (void (*)(void))(uintptr_t)&_estack, Reset_Handler, Fault_Handler, Fault_Handler, Fault_Handler,
    Fault_Handler, Fault_Handler, 0, 0, 0, 0, Fault_Handler, Fault_Handler, 0, Fault_Handler, Fault_Handler,
};
