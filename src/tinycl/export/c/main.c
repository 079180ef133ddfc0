/* Generated learner's test program: replays learning events from the input file and
 * dumps, after each, the status, instruction ticks and the whole learner state; then
 * logits and predicted class of test samples. Layout: export/generate.py (read_output). */
#include "tinycl.h"
#include "tc_io.h"

static uint64_t arena[(TINYCL_ARENA_BYTES + 7) / 8];
static float xs[TINYCL_MAX_NEW * TINYCL_INPUT_NUMEL];
static int32_t ys[TINYCL_MAX_NEW];
static float logits[TINYCL_CLASSES];

static void put_i32(int32_t v) { io_write(&v, 4); }

int main(int argc, char **argv)
{
    int32_t events, e, n, m, i, cls, ex;
    uint64_t t0, t1, cal;
    if (io_open(argc, argv)) return 2;
    cal = io_calibrate(1000000u);
    io_write(&cal, 8);
    put_i32((int32_t)tinycl_arena_need());
    /* bad arguments: status codes, nothing crashes */
    put_i32(tinycl_learn(xs, ys, 1));                      /* before init */
    put_i32(tinycl_init(arena, 8));                        /* arena too small */
    put_i32(tinycl_init(arena, sizeof arena));
    put_i32(tinycl_learn(0, ys, 1));                       /* null pointer */
    ys[0] = TINYCL_CLASSES;
    put_i32(tinycl_learn(xs, ys, 1));                      /* label out of range */
    put_i32(tinycl_learn(xs, ys, 0));                      /* no samples */
    put_i32(tinycl_predict(xs, 0));
    put_i32(tinycl_set_experience(-1));                    /* experience id out of range */
    if (io_read(&events, 4)) return 3;
    for (e = 0; e < events; e++) {
        if (io_read(&ex, 4) || io_read(&n, 4) || n < 1 || n > TINYCL_MAX_NEW) return 4;
        if (io_read(xs, (size_t)n * TINYCL_INPUT_NUMEL * 4) || io_read(ys, (size_t)n * 4)) return 5;
        put_i32(tinycl_set_experience(ex));
        t0 = io_ticks();
        put_i32(tinycl_learn(xs, ys, n));
        t1 = io_ticks() - t0;
        io_write(&t1, 8);
        tinycl_dump(io_write, n);
    }
    if (io_read(&m, 4)) return 6;
    for (i = 0; i < m; i++) {
        if (io_read(xs, TINYCL_INPUT_NUMEL * 4)) return 7;
        put_i32(tinycl_logits(xs, logits));
        io_write(logits, sizeof logits);
        put_i32(tinycl_predict(xs, &cls));
        put_i32(cls);
    }
    io_close();
    return 0;
}
