/* Baseline peer for `hwbreak-bench`: the plainest possible counting-mode
 * hardware breakpoint, straight perf_event_open(2), no library.
 *
 *   raw_count ADDR LEN -- CMD [ARGS...]
 *
 * Forks CMD, opens a PERF_TYPE_BREAKPOINT write watch on ADDR (hex, the
 * run-time address: use a non-PIE CMD and `nm`) of LEN bytes for the child
 * with inherit=1 (threads are counted too) and enable_on_exec=1 (counting
 * starts at the exec of CMD, not in the forked copy of this program), lets the
 * child exec, waits for it and reads the count.  Prints one line:
 *   hits=<count> seconds=<wall seconds from exec release to child exit> status=<exit status>
 * Exit status: 0 if CMD exited 0, 1 on a setup error (message on stderr).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/hw_breakpoint.h>
#include <linux/perf_event.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	if (argc < 5 || strcmp(argv[3], "--") != 0) {
		fprintf(stderr, "usage: raw_count ADDR LEN -- CMD [ARGS...]\n");
		return 1;
	}
	char *end;
	uint64_t addr = strtoull(argv[1], &end, 16);
	if (*end != '\0' || addr == 0) {
		fprintf(stderr, "raw_count: ADDR must be a non-zero hex address, got '%s'\n", argv[1]);
		return 1;
	}
	long len = strtol(argv[2], &end, 10);
	if (*end != '\0' || (len != 1 && len != 2 && len != 4 && len != 8)) {
		fprintf(stderr, "raw_count: LEN must be 1, 2, 4 or 8, got '%s'\n", argv[2]);
		return 1;
	}

	/* The child waits on `go` until the event is attached, then execs. */
	int go[2];
	if (pipe(go) != 0) {
		perror("raw_count: pipe");
		return 1;
	}
	pid_t child = fork();
	if (child < 0) {
		perror("raw_count: fork");
		return 1;
	}
	if (child == 0) {
		char c;
		close(go[1]);
		if (read(go[0], &c, 1) != 1)
			_exit(127); /* parent gave up */
		close(go[0]);
		execvp(argv[4], &argv[4]);
		fprintf(stderr, "raw_count: exec %s: %s\n", argv[4], strerror(errno));
		_exit(127);
	}
	close(go[0]);

	struct perf_event_attr attr;
	memset(&attr, 0, sizeof(attr));
	attr.size = sizeof(attr);
	attr.type = PERF_TYPE_BREAKPOINT;
	attr.bp_type = HW_BREAKPOINT_W;
	attr.bp_addr = addr;
	attr.bp_len = len;
	attr.sample_period = 0; /* counting mode: no overflow, no sample, like perf stat */
	attr.disabled = 1;
	attr.enable_on_exec = 1;
	attr.inherit = 1;
	attr.exclude_kernel = 1;
	attr.exclude_hv = 1;
	int fd = syscall(SYS_perf_event_open, &attr, child, -1, -1, PERF_FLAG_FD_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "raw_count: perf_event_open: %s\n", strerror(errno));
		close(go[1]); /* the child reads EOF and exits */
		waitpid(child, NULL, 0);
		return 1;
	}

	double t0 = now();
	if (write(go[1], "g", 1) != 1) {
		perror("raw_count: write");
		return 1;
	}
	close(go[1]);
	int status;
	if (waitpid(child, &status, 0) != child) {
		perror("raw_count: waitpid");
		return 1;
	}
	double t1 = now();

	uint64_t count;
	if (read(fd, &count, sizeof(count)) != sizeof(count)) {
		perror("raw_count: read");
		return 1;
	}
	int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	printf("hits=%llu seconds=%.6f status=%d\n", (unsigned long long)count, t1 - t0, code);
	return code == 0 ? 0 : 1;
}
