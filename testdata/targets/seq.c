/* seq: writes a known sequence, for conditions (--if) and --stop.
 *
 *   seq ROUNDS MOD THREADS [wait]
 *
 * Each of THREADS threads runs ROUNDS rounds; round i sets `step` to i and
 * then `value` to i % MOD, through write_value(). So `value` is written
 * ROUNDS * THREADS times, and a given K < MOD is written
 * THREADS * ceil((ROUNDS - K) / MOD) times; with one thread, the first write
 * of K is round K, and `step` tells which round wrote last. The symbol
 * `after_write` is the instruction right after the store to `value` (a
 * thread stopped at that write has its IP there). Nothing writes `value`
 * before the threads start, so every count is exact.
 *
 * Prints "pid=P", "addr value=0x...", "addr step=0x...",
 * "addr after_write=0x...", then with "wait" "ready", and waits for one
 * line on stdin before starting the threads.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

long value;
long step;
static long rounds, mod;

extern char after_write[];

__attribute__((noinline)) void write_value(long v)
{
    __asm__ volatile("movq %1, %0\n\t"
                     ".globl after_write\n"
                     "after_write:"
                     : "=m"(value)
                     : "r"(v)
                     : "memory");
}

static void *worker(void *arg)
{
    (void)arg;
    for (long i = 0; i < rounds; i++) {
        __atomic_store_n(&step, i, __ATOMIC_RELAXED);
        write_value(i % mod);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s ROUNDS MOD THREADS [wait]\n", argv[0]);
        return 2;
    }
    rounds = atol(argv[1]);
    mod = atol(argv[2]);
    int threads = atoi(argv[3]);
    printf("pid=%d\n", (int)getpid());
    printf("addr value=%p\n", (void *)&value);
    printf("addr step=%p\n", (void *)&step);
    printf("addr after_write=%p\n", (void *)after_write);
    if (argc > 4 && strcmp(argv[4], "wait") == 0) {
        printf("ready\n");
        fflush(stdout);
        char line[64];
        if (!fgets(line, sizeof line, stdin))
            line[0] = 0;
    }
    fflush(stdout);
    pthread_t *t = calloc((size_t)threads, sizeof *t);
    for (int i = 0; i < threads; i++)
        pthread_create(&t[i], NULL, worker, NULL);
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    printf("done value=%ld step=%ld\n", value, step);
    return 0;
}
