/* usecopy: names libwatchme.so's watchme_value directly, so the linker copies
 * the variable into this executable (a copy relocation, R_X86_64_COPY) and
 * every write, the library's included, goes to the copy. Tests that
 * `libwatchme.so:watchme_value` resolves to the copy, where the writes are.
 *
 *   usecopy ITERATIONS [wait]
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
    printf("addr watchme_value=%p\n", (void *)&watchme_value);
    printf("addr lib watchme_value=%p\n", (void *)watchme_addr());
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
    printf("done watchme_value=%ld\n", watchme_value);
    return 0;
}
