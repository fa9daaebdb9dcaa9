/* counter: the C test target for hwbreak (built PIE as `counter`, non-PIE as
 * `counter-nopie`).
 *
 *   counter ITERATIONS THREADS_BEFORE THREADS_AFTER [wait]
 *
 * Every worker runs ITERATIONS rounds; one round writes each of these once:
 *   counter          (bump_counter)
 *   state.count      (bump_state)
 *   state.a          (bump_state)
 *   table[round%16]  (bump_table)
 * THREADS_BEFORE workers are created first, blocked on a gate. With "wait",
 * the program prints "ready" and waits for one line on stdin (attach with -p
 * meanwhile); without it, it goes on at once. Then the gate opens and
 * THREADS_AFTER more workers are created. Nothing writes the watched globals
 * before the gate opens, so every count below is exact.
 *
 * The first lines are machine-readable: "pid=P", "addr NAME=0x..." and
 * "expect NAME=COUNT ...".
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct state {
    int a;
    long count;
    char name[16];
};

long counter;
struct state state = { 0, 0, "counter" };
int table[16];
/* Shapes for nested expressions (never written by the workers). */
struct point {
    int x;
    int y;
};
struct outer {
    long tag;
    struct point p[2];
} outer;
int grid[3][4];
struct tagged {
    int kind;
    union {
        long l;
        double d;
    };
} tagged;
unsigned char flags[5];

/* Thread-local: one copy per thread, so no single address (an error case). */
__thread long tls_rounds;

static long iterations;
static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static int gate_open;

__attribute__((noinline)) void bump_counter(void)
{
    __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED);
}

__attribute__((noinline)) void bump_state(int id)
{
    __atomic_fetch_add(&state.count, 1, __ATOMIC_RELAXED);
    __atomic_store_n(&state.a, id, __ATOMIC_RELAXED);
}

__attribute__((noinline)) void bump_table(long round)
{
    __atomic_fetch_add(&table[round % 16], 1, __ATOMIC_RELAXED);
}

static void *worker(void *arg)
{
    int id = (int)(long)arg;
    pthread_mutex_lock(&gate_lock);
    while (!gate_open)
        pthread_cond_wait(&gate_cond, &gate_lock);
    pthread_mutex_unlock(&gate_lock);
    for (long r = 0; r < iterations; r++) {
        bump_counter();
        bump_state(id);
        bump_table(r);
        tls_rounds++;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s ITERATIONS THREADS_BEFORE THREADS_AFTER [wait]\n", argv[0]);
        return 2;
    }
    iterations = atol(argv[1]);
    int before = atoi(argv[2]), after = atoi(argv[3]);
    int wait = argc > 4 && strcmp(argv[4], "wait") == 0;
    long workers = before + after;

    printf("pid=%d\n", (int)getpid());
    printf("addr counter=%p\n", (void *)&counter);
    printf("addr state=%p\n", (void *)&state);
    printf("addr state.a=%p\n", (void *)&state.a);
    printf("addr state.count=%p\n", (void *)&state.count);
    printf("addr state.name=%p\n", (void *)&state.name);
    printf("addr table=%p\n", (void *)table);
    printf("addr table[3]=%p\n", (void *)&table[3]);
    printf("addr fn bump_counter=%p\n", (void *)bump_counter);
    printf("addr outer.p[1].y=%p\n", (void *)&outer.p[1].y);
    printf("addr grid[2][3]=%p\n", (void *)&grid[2][3]);
    printf("addr grid[1]=%p\n", (void *)&grid[1]);
    printf("addr tagged.d=%p\n", (void *)&tagged.d);
    printf("addr flags[3]=%p\n", (void *)&flags[3]);
    printf("expect counter=%ld state.count=%ld state.a=%ld", iterations * workers,
           iterations * workers, iterations * workers);
    for (int i = 0; i < 16; i++)
        printf(" table[%d]=%ld", i, ((iterations + 15 - i) / 16) * workers);
    printf(" bump_counter=%ld\n", iterations * workers);
    fflush(stdout);

    pthread_t *tids = calloc((size_t)workers, sizeof(pthread_t));
    for (long i = 0; i < before; i++)
        pthread_create(&tids[i], NULL, worker, (void *)(i + 1));
    if (wait) {
        printf("ready\n");
        fflush(stdout);
        char line[64];
        if (!fgets(line, sizeof line, stdin))
            line[0] = 0;
    }
    pthread_mutex_lock(&gate_lock);
    gate_open = 1;
    pthread_cond_broadcast(&gate_cond);
    pthread_mutex_unlock(&gate_lock);
    for (long i = before; i < workers; i++)
        pthread_create(&tids[i], NULL, worker, (void *)(i + 1));
    for (long i = 0; i < workers; i++)
        pthread_join(tids[i], NULL);
    printf("done counter=%ld state.count=%ld\n", counter, state.count);
    free(tids);
    return 0;
}
