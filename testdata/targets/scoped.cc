// C++ names a debugger can name: templates, ABI tags, anonymous namespaces,
// base classes, the standard library, functions' statics, and two file
// statics of the same name (this file's `count` and scoped2.cc's).
// `scoped [wait]`: prints pid=, addr lines, then (with wait) ready; waits.
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>
#include <unistd.h>

namespace ns {
template <class T> struct Pool {
    static T hwm;
};
template <class T> T Pool<T>::hwm;
} // namespace ns

namespace cfg {
std::string name = "scoped"; // mangled with the cxx11 ABI tag: cfg::name[abi:cxx11]
}

namespace {
int hidden; // (anonymous namespace)::hidden
}

struct Base {
    long b;
    int shared;
};
struct Derived : Base {
    int d;
    int shared; // hides Base::shared
};
Derived g_der;
std::vector<int> g_vec;
static int count; // scoped2.cc has one too

int bump() {
    static int calls; // bump()::calls
    return ++calls;
}
int *scoped2_count();

int main(int argc, char **argv) {
    ns::Pool<int>::hwm = 1;
    ns::Pool<long>::hwm = 2;
    hidden = 3;
    count = bump();
    g_vec.push_back(4);
    g_der.d = 5;
    std::printf("pid=%d\n", (int)getpid());
    std::printf("addr ns::Pool<int>::hwm=%p\n", (void *)&ns::Pool<int>::hwm);
    std::printf("addr ns::Pool<long>::hwm=%p\n", (void *)&ns::Pool<long>::hwm);
    std::printf("addr cfg::name=%p\n", (void *)&cfg::name);
    std::printf("addr hidden=%p\n", (void *)&hidden);
    std::printf("addr g_der.b=%p\n", (void *)&g_der.b);
    std::printf("addr g_der.shared=%p\n", (void *)&g_der.shared);
    std::printf("addr g_der.Base::shared=%p\n", (void *)&g_der.Base::shared);
    std::printf("addr count=%p\n", (void *)&count);
    std::printf("addr scoped2::count=%p\n", (void *)scoped2_count());
    if (argc > 1) {
        std::printf("ready\n");
        std::fflush(stdout);
        std::string line;
        std::getline(std::cin, line);
    }
    return bump() + g_vec[0] > 100;
}
