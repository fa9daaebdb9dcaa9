/* Test target for hwbreak-linux: writes `target_var` a known number of times
 * from threads started before and after the watcher attaches.
 * usage: writers N T_BEFORE T_AFTER STORM
 *   prints "addr <hex> pid <pid>", then "ready"; waits for a line on stdin;
 *   then: the main thread, T_BEFORE pre-existing threads and T_AFTER new threads
 *   each write N times; STORM threads are created and exit (each writes N
 *   times and creates one grandchild that writes N times). Prints
 *   "done <writes>" (the exact number of writes to target_var), then waits
 *   for stdin to close and exits. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

volatile long target_var;
static atomic_long writes;
static atomic_int go;
static int N;

__attribute__((noinline)) static void write_n(void) {
    for (int i = 0; i < N; i++) target_var = i;
    atomic_fetch_add(&writes, N);
}

static void *grandchild(void *a) { (void)a; write_n(); return NULL; }

static void *storm(void *a) {
    (void)a;
    write_n();
    pthread_t g;
    if (pthread_create(&g, NULL, grandchild, NULL) == 0) pthread_join(g, NULL);
    return NULL;
}

static void *before(void *a) {
    (void)a;
    while (!atomic_load(&go)) usleep(100);
    write_n();
    return NULL;
}

static void *after(void *a) { (void)a; write_n(); return NULL; }

int main(int argc, char **argv) {
    if (argc < 5) return 2;
    N = atoi(argv[1]);
    int tb = atoi(argv[2]), ta = atoi(argv[3]), ts = atoi(argv[4]);
    pthread_t *b = calloc(tb + 1, sizeof *b), *t = calloc(ta + 1, sizeof *t);
    for (int i = 0; i < tb; i++) pthread_create(&b[i], NULL, before, NULL);
    printf("addr %p pid %d\nready\n", (void *)&target_var, getpid());
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin)) return 3;
    atomic_store(&go, 1);
    write_n();
    for (int i = 0; i < ta; i++) pthread_create(&t[i], NULL, after, NULL);
    for (int i = 0; i < ts; i++) {
        pthread_t s;
        if (pthread_create(&s, NULL, storm, NULL) == 0) pthread_detach(s);
        if (i % 64 == 63) usleep(1000);
    }
    for (int i = 0; i < tb; i++) pthread_join(b[i], NULL);
    for (int i = 0; i < ta; i++) pthread_join(t[i], NULL);
    /* wait for detached storm threads: each adds 2N */
    while (atomic_load(&writes) < (long)N * (1 + tb + ta + 2L * ts)) usleep(200);
    printf("done %ld\n", atomic_load(&writes));
    fflush(stdout);
    while (fgets(line, sizeof line, stdin)) {}
    return 0;
}
