/* A process whose main thread sits in an uninterruptible wait while a
 * watcher attaches: it vforks a child that blocks reading stdin, so the
 * parent waits for the child in the kernel (state D) until the test writes
 * a line. usage: vforker N
 * prints "addr <hex> pid <pid>" and "ready"; on the line "vfork" it vforks
 * (the child reads one more line, then _exits); once the child is gone the
 * main thread writes target_var N times, lets its second thread write N
 * times, prints "done", and waits for EOF. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

volatile long target_var;
static int N;
static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t c = PTHREAD_COND_INITIALIZER;
static int go;
static char byte;

static void write_n(void) { for (int i = 0; i < N; i++) target_var = i; }

static void *second(void *a) {
    (void)a;
    pthread_mutex_lock(&m);
    while (!go) pthread_cond_wait(&c, &m);
    pthread_mutex_unlock(&m);
    write_n();
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    N = atoi(argv[1]);
    pthread_t t;
    pthread_create(&t, NULL, second, NULL);
    printf("addr %p pid %d\nready\n", (void *)&target_var, getpid());
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin) || strncmp(line, "vfork", 5) != 0) return 3;
    pid_t child = vfork();
    if (child == 0) {
        /* Blocks until the test writes a line: the parent is in vfork wait. */
        while (read(0, &byte, 1) == 1 && byte != '\n') {}
        _exit(0);
    }
    write_n();
    pthread_mutex_lock(&m);
    go = 1;
    pthread_cond_signal(&c);
    pthread_mutex_unlock(&m);
    pthread_join(t, NULL);
    printf("done\n");
    fflush(stdout);
    while (fgets(line, sizeof line, stdin)) {}
    return 0;
}
