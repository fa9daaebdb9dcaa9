// The second file of `scoped`: another file static named `count`.
static int count = 7;
int *scoped2_count() { return &count; }
