/* Benchmark target for `hwbreak-bench`.
 *
 * Writes the global `counter` N times in a tight loop, then exits 0.
 *   target N [THREADS]
 * With THREADS > 1, the main thread creates THREADS workers that split the N
 * writes between them (the remainder goes to worker 0), so the total number of
 * writes to `counter` is exactly N either way.  The main thread itself does not
 * write `counter` in the threaded variant.
 *
 * Build non-PIE with frame pointers so that `nm` gives the run-time address
 * (perf's `mem:ADDR` needs a raw address) and stacks can be walked; -O0 keeps
 * the frame pointer even in the leaf loop (gcc -O1 drops it there):
 *   gcc -O0 -g -no-pie -fno-omit-frame-pointer -pthread target.c -o target
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

/* Written with one 8-byte store per iteration.  Page-aligned on purpose: the
 * kernel's ELF loader zeroes the rest of the page after .data at exec (a
 * kernel-mode write), and a peer that cannot exclude kernel writes (bpftrace)
 * would count that as one extra hit.  On its own page nothing but the loop
 * writes it. */
volatile long counter __attribute__((aligned(4096)));

static long parse_count(const char *s, const char *what)
{
	char *end;
	long v = strtol(s, &end, 10);
	if (*s == '\0' || *end != '\0' || v < 0) {
		fprintf(stderr, "target: %s must be a non-negative integer, got '%s'\n", what, s);
		exit(2);
	}
	return v;
}

/* noinline: gives every hit the same, named IP and a two-frame stack.
 * Every write changes the value: gdb's `watch` reports a write only when it
 * changes the value, so a repeated value would be a hit for every other
 * contender but not for gdb.  A thread writes base + 1, base + 2, ... and each
 * thread has its own base (the global starts at 0), so no write, from any
 * thread, stores the value already there. */
__attribute__((noinline)) static void write_counter(long n, long base)
{
	for (long i = 0; i < n; i++)
		counter = base + i + 1;
}

struct work {
	long n, base;
};

static void *worker(void *arg)
{
	struct work *w = arg;
	write_counter(w->n, w->base);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: target N [THREADS]\n");
		return 2;
	}
	long n = parse_count(argv[1], "N");
	long threads = argc == 3 ? parse_count(argv[2], "THREADS") : 1;
	if (threads <= 1) {
		write_counter(n, 0);
		return 0;
	}
	if (threads > 1024) {
		fprintf(stderr, "target: THREADS must be <= 1024\n");
		return 2;
	}
	pthread_t tid[1024];
	static struct work work[1024];
	for (long t = 0; t < threads; t++) {
		work[t].n = n / threads + (t == 0 ? n % threads : 0);
		work[t].base = (t + 1) << 40; /* disjoint ranges: N < 2^40 */
		if (pthread_create(&tid[t], NULL, worker, &work[t]) != 0) {
			perror("target: pthread_create");
			return 1;
		}
	}
	for (long t = 0; t < threads; t++)
		pthread_join(tid[t], NULL);
	return 0;
}
