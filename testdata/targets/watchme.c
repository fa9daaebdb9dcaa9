/* libwatchme.so: a shared library with a global, for `libwatchme.so:watchme_value`. */
#include "watchme.h"

long watchme_value;
struct watchme_pair watchme_pair;

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
