//! ptrace debug-register backend (TODO: being filled in).
