/* uselib: calls libwatchme.so's watchme_touch() a known number of times.
 *
 *   uselib ITERATIONS [wait]
 *
 * It never names watchme_value directly: that would make the linker copy the
 * variable into the executable (a copy relocation), and the library's own
 * symbol would no longer be where the writes go.
 *
 * Prints "pid=P", "addr watchme_value=0x..." (the library's own view of the
 * address), "expect watchme_value=N", then with "wait" prints "ready" and
 * reads one line from stdin before any write.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "watchme.h"

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s ITERATIONS [wait]\n", argv[0]);
        return 2;
    }
    long n = atol(argv[1]);
    printf("pid=%d\n", (int)getpid());
    printf("addr watchme_value=%p\n", (void *)watchme_addr());
    printf("addr watchme_pair.right=%p\n", (void *)&watchme_pair_addr()->right);
    printf("expect watchme_value=%ld\n", n);
    fflush(stdout);
    if (argc > 2 && strcmp(argv[2], "wait") == 0) {
        printf("ready\n");
        fflush(stdout);
        char line[64];
        if (!fgets(line, sizeof line, stdin))
            line[0] = 0;
    }
    for (long i = 0; i < n; i++)
        watchme_touch(1);
    printf("done watchme_value=%ld\n", *watchme_addr());
    return 0;
}
