#ifndef WATCHME_H
#define WATCHME_H
struct watchme_pair {
    int left;
    int right;
};
extern long watchme_value;
extern struct watchme_pair watchme_pair;
void watchme_touch(long v);
long *watchme_addr(void);
struct watchme_pair *watchme_pair_addr(void);
#endif
