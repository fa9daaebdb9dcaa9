/* A live process whose main thread has exited: main starts a worker and
 * calls pthread_exit, leaving a zombie leader. usage: leaderexit N
 * prints "addr <hex> pid <pid>" and "ready"; the worker waits for a line,
 * writes target_var N times, prints "done N", and exits on EOF. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

volatile long target_var;
static int N;

static void *worker(void *a) {
    (void)a;
    char line[64];
    if (!fgets(line, sizeof line, stdin)) exit(3);
    for (int i = 0; i < N; i++) target_var = i;
    printf("done %d\n", N);
    fflush(stdout);
    while (fgets(line, sizeof line, stdin)) {}
    exit(0);
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    N = atoi(argv[1]);
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    printf("addr %p pid %d\nready\n", (void *)&target_var, getpid());
    fflush(stdout);
    pthread_exit(NULL);
}
