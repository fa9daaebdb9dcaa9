/* A process that creates threads all the time, from before the watcher
 * attaches until after: the enumeration race. Each thread lingers 2 ms,
 * so threads alive across the attach write after it: if it then sees `go`
 * it writes N times and creates one grandchild that writes N times. usage: spawner N AFTER_THREADS
 * prints "addr <hex>" and "ready", waits for a line, then stops after
 * AFTER_THREADS threads saw go, prints "done <writes>", waits for EOF. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

volatile long target_var;
static atomic_long writes, saw_go, live;
static atomic_int go, stop;
static int N, AFTER;

static void write_n(void) { for (int i = 0; i < N; i++) target_var = i; atomic_fetch_add(&writes, N); }
static void *grandchild(void *a) { (void)a; write_n(); atomic_fetch_sub(&live, 1); return NULL; }
static void *worker(void *a) {
    (void)a;
    usleep(2000); /* linger: threads alive across the attach write after it */
    if (atomic_load(&go)) {
        atomic_fetch_add(&saw_go, 1);
        write_n();
        pthread_t g;
        atomic_fetch_add(&live, 1);
        if (pthread_create(&g, NULL, grandchild, NULL) == 0) pthread_detach(g); else atomic_fetch_sub(&live, 1);
    }
    atomic_fetch_sub(&live, 1);
    return NULL;
}
static void *spawn_loop(void *a) {
    (void)a;
    while (!atomic_load(&stop)) {
        pthread_t t;
        atomic_fetch_add(&live, 1);
        if (pthread_create(&t, NULL, worker, NULL) == 0) pthread_detach(t); else atomic_fetch_sub(&live, 1);
        if (atomic_load(&saw_go) >= AFTER) atomic_store(&stop, 1);
        usleep(50);
    }
    return NULL;
}
int main(int argc, char **argv) {
    if (argc < 3) return 2;
    N = atoi(argv[1]); AFTER = atoi(argv[2]);
    pthread_t s1, s2;
    pthread_create(&s1, NULL, spawn_loop, NULL);
    pthread_create(&s2, NULL, spawn_loop, NULL);
    printf("addr %p pid %d\nready\n", (void *)&target_var, getpid());
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin)) return 3;
    atomic_store(&go, 1);
    pthread_join(s1, NULL); pthread_join(s2, NULL);
    while (atomic_load(&live) > 0) usleep(200);
    printf("done %ld\n", atomic_load(&writes));
    fflush(stdout);
    while (fgets(line, sizeof line, stdin)) {}
    return 0;
}
