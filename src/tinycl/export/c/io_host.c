/* Host I/O for the test program: argv[1] input file, argv[2] output file. */
#include <stdio.h>
#include "tc_io.h"

static FILE *in_f, *out_f;

int io_open(int argc, char **argv)
{
    if (argc < 3) return 1;
    in_f = fopen(argv[1], "rb");
    out_f = fopen(argv[2], "wb");
    return !(in_f && out_f);
}

int io_read(void *buf, size_t n) { return fread(buf, 1, n, in_f) != n; }
void io_write(const void *buf, size_t n) { fwrite(buf, 1, n, out_f); }
void io_close(void) { fclose(in_f); fclose(out_f); }
uint64_t io_ticks(void) { return 0; }
uint64_t io_calibrate(uint32_t loops) { (void)loops; return 0; }
