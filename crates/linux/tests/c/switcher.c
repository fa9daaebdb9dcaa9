/* Test target for context-switch records: one thread that sleeps between
 * writes (voluntary switches) and two that spin on CPU 0 together (each
 * preempts the other).
 * usage: switcher N
 *   prints "addr <hex> pid <pid>", then "ready"; waits for a line on stdin;
 *   the sleeper writes target_var N times with a 1 ms sleep after each; each
 *   spinner writes it N times with about 0.5 ms of spinning after each.
 *   Prints "done <writes>", then waits for stdin to close and exits. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

volatile long target_var;
static atomic_long writes;
static int N;

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static void *sleeper(void *a) {
    (void)a;
    for (int i = 0; i < N; i++) {
        target_var = i;
        atomic_fetch_add(&writes, 1);
        usleep(1000);
    }
    return NULL;
}

static void *spinner(void *a) {
    (void)a;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    if (sched_setaffinity(0, sizeof one, &one) != 0) perror("sched_setaffinity");
    for (int i = 0; i < N; i++) {
        target_var = i;
        atomic_fetch_add(&writes, 1);
        long until = now_ns() + 500000;
        while (now_ns() < until) {
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    N = argc > 1 ? atoi(argv[1]) : 100;
    printf("addr %p pid %d\nready\n", (void *)&target_var, getpid());
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin)) return 1;
    pthread_t t[3];
    pthread_create(&t[0], NULL, sleeper, NULL);
    pthread_create(&t[1], NULL, spinner, NULL);
    pthread_create(&t[2], NULL, spinner, NULL);
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
    printf("done %ld\n", atomic_load(&writes));
    fflush(stdout);
    while (fgets(line, sizeof line, stdin)) {
    }
    return 0;
}
