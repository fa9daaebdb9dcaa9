/* memsetter: a global written only by glibc's memset, which keeps no frame
 * pointer. A frame-pointer walk from inside memset skips its caller; a
 * DWARF (CFI) walk finds it.
 *
 *   memsetter N      calls outer(N): N times clear_it(i) -> memset(&blob, i, ..)
 *
 * Built with -fno-builtin so that memset is glibc's, not inlined.
 * clear_it may tail-call memset (then it is rightly absent from any stack);
 * outer is the caller every stack must show.
 */
#include <stdlib.h>
#include <string.h>

struct big {
	long a[64];
} blob;

__attribute__((noinline)) void clear_it(int v)
{
	memset(&blob, v, sizeof blob);
}

__attribute__((noinline)) void outer(int n)
{
	for (int i = 0; i < n; i++)
		clear_it(i);
}

int main(int argc, char **argv)
{
	outer(argc > 1 ? atoi(argv[1]) : 3);
	return 0;
}
