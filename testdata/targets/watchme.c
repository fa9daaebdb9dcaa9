/* libwatchme.so: a shared library with a global, for `libwatchme.so:watchme_value`. */
#include "watchme.h"
#include <signal.h>
#include <stdlib.h>

long watchme_value;
struct watchme_pair watchme_pair;
/* Set by the library's constructor, which ld.so runs before the program's
 * entry point: a write that a watch armed at the entry point cannot see.
 * With WATCHME_DIE=SIG in the environment the constructor raises SIG
 * instead: a program that ends before its entry point. */
int watchme_init;

__attribute__((constructor)) static void watchme_constructor(void)
{
    const char *die = getenv("WATCHME_DIE");
    if (die)
        raise(atoi(die));
    watchme_init = 1;
}

__attribute__((noinline)) void watchme_touch(long v)
{
    __atomic_fetch_add(&watchme_value, v, __ATOMIC_RELAXED);
    __atomic_store_n(&watchme_pair.right, v, __ATOMIC_RELAXED);
}

long *watchme_addr(void)
{
    return &watchme_value;
}

struct watchme_pair *watchme_pair_addr(void)
{
    return &watchme_pair;
}
