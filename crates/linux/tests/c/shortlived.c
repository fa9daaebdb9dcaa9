/* A short-lived program whose hits come from two functions: bump_framed
 * (it calls another function, so it keeps a frame pointer, and the
 * kernel's frame-pointer callchain is exact) and bump_leaf (a leaf: no
 * frame, so a frame-pointer walk from it skips its caller, worker).
 * usage: shortlived N — two threads each call both N times, then it exits. */
#include <pthread.h>
#include <stdlib.h>

volatile long target_var;
static int N;

__attribute__((noinline)) void noop(void) { __asm__ volatile(""); }
__attribute__((noinline)) void bump_framed(void) { target_var = target_var + 1; noop(); }
__attribute__((noinline)) void bump_leaf(void) { target_var = target_var + 1; }

__attribute__((noinline)) static void *worker(void *a) {
    (void)a;
    for (int i = 0; i < N; i++) {
        bump_framed();
        bump_leaf();
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    N = atoi(argv[1]);
    pthread_t t[2];
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, worker, NULL);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    return 0;
}
