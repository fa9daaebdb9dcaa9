/* A context-switch-heavy target for the switch-record bench: THREADS
 * threads pinned to CPU 0, each writing target_var and then calling
 * sched_yield() N times, so nearly every write is followed by a switch.
 * usage: yielder N THREADS
 *   prints "addr <hex> pid <pid>", then "ready"; waits for a line on stdin;
 *   runs; prints "done <writes>", then waits for stdin to close. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

volatile long target_var;
static atomic_long writes;
static int N;

static void *worker(void *a) {
    (void)a;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    if (sched_setaffinity(0, sizeof one, &one) != 0) perror("sched_setaffinity");
    for (int i = 0; i < N; i++) {
        target_var = i;
        sched_yield();
    }
    atomic_fetch_add(&writes, N);
    return NULL;
}

int main(int argc, char **argv) {
    N = argc > 1 ? atoi(argv[1]) : 1000;
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    if (threads < 1 || threads > 64) threads = 2;
    printf("addr %p pid %d\nready\n", (void *)&target_var, getpid());
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin)) return 1;
    pthread_t t[64];
    for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, worker, NULL);
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    printf("done %ld\n", atomic_load(&writes));
    fflush(stdout);
    while (fgets(line, sizeof line, stdin)) {
    }
    return 0;
}
