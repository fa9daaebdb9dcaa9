//! Errors of symbol resolution: each names the rule that was broken and what to try.

use crate::error::Denied;
use std::path::PathBuf;

/// Everything that can go wrong turning a name into an address or an IP into a frame.
#[derive(Debug, thiserror::Error)]
pub enum SymbolError {
    /// The process does not exist (never did, or exited).
    #[error("process {pid} does not exist (it exited, or the PID is wrong): check it with `ps -p {pid}`")]
    NoProcess {
        /// The PID asked for.
        pid: i32,
    },
    /// Not allowed to read a process's maps or executable link: another
    /// user's process, or a non-dumpable one.
    #[error("permission denied to read {} (EACCES): {}", path.display(), read_rule(*.pid, *.rule))]
    Permission {
        /// The process.
        pid: i32,
        /// The file refused.
        path: PathBuf,
        /// Whose process it is: [`Denied::OtherUser`] or [`Denied::Own`].
        rule: Denied,
    },
    /// A file (`/proc/PID/maps`, an ELF file) could not be read.
    #[error("cannot read {}: {source}{hint}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
        /// What to try (may be empty).
        hint: String,
    },
    /// A file is not an ELF object we can parse.
    #[error("{} is not a readable ELF file: {reason}", path.display())]
    BadElf {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// The expression does not follow the grammar.
    #[error("bad location '{expr}' at column {column}: {message}. Expected NAME, NAME.field, NAME[index], NAME+OFFSET, lib.so:NAME, 'file.c'::NAME, function::NAME, ns::Class<T>::NAME, crate::PATH or 0xADDRESS")]
    Syntax {
        /// The whole expression.
        expr: String,
        /// 1-based column of the problem.
        column: usize,
        /// What is wrong there.
        message: String,
    },
    /// No variable or function has this name.
    #[error(
        "no variable or function named '{name}' in {searched}{}",
        suggest_list(suggestions)
    )]
    NotFound {
        /// The name looked up.
        name: String,
        /// Which modules were searched.
        searched: String,
        /// Close matches by edit distance, best first.
        suggestions: Vec<String>,
    },
    /// A name denotes several variables (two `static int count;` in two
    /// files, or one name in several namespaces).
    #[error("'{name}' names {} variables in {module}: {}. Name the one you mean as shown", matches.len(), matches.join("; "))]
    Ambiguous {
        /// The name looked up.
        name: String,
        /// The module holding them.
        module: String,
        /// Each match: how to name it, its address and file.
        matches: Vec<String>,
    },
    /// `'file.c'::NAME` names a source file that no module was built from.
    #[error("no source file '{scope}' in {searched}: write the file name as the debug info has it (e.g. 'counter.c'::count or 'src/counter.c'::count)")]
    NoScope {
        /// The file asked for.
        scope: String,
        /// The modules searched.
        searched: String,
    },
    /// `lib.so:NAME` names a module that is not loaded (or not the executable).
    #[error("no module '{module}' is loaded{where_}; loaded modules: {loaded}. If the library is loaded later (dlopen, or a command not started yet), attach with -p once it is loaded")]
    NoModule {
        /// The module asked for.
        module: String,
        /// " in process P", or "" for an executable not yet running.
        where_: String,
        /// File names of the loaded modules.
        loaded: String,
    },
    /// `.field` on a type without that field.
    #[error("'{expr}' has no field '{field}' (its type is {type_name}); fields: {fields}")]
    NoField {
        /// The expression up to the failing step.
        expr: String,
        /// The missing field.
        field: String,
        /// The type searched.
        type_name: String,
        /// The fields it has.
        fields: String,
    },
    /// `.field` on a value that is not a struct or union.
    #[error("'{expr}' is of type {type_name}, which has no fields: use '.field' only on a struct or union")]
    NotAStruct {
        /// The expression up to the failing step.
        expr: String,
        /// Its type.
        type_name: String,
    },
    /// `[i]` on a value that is not an array.
    #[error("'{expr}' is of type {type_name}, which is not an array: use '[index]' only on an array (for a pointer, watch the pointee by address)")]
    NotAnArray {
        /// The expression up to the failing step.
        expr: String,
        /// Its type.
        type_name: String,
    },
    /// `[i]` past the end of an array.
    #[error("index {index} is out of bounds for '{expr}' of type {type_name}: valid indexes are 0..={}", len.saturating_sub(1))]
    OutOfBounds {
        /// The array expression.
        expr: String,
        /// The index asked for.
        index: u64,
        /// Number of elements.
        len: u64,
        /// The array's type.
        type_name: String,
    },
    /// `.field` or `[i]` on a name that has no DWARF type (stripped or built without -g).
    #[error("'{name}' in {module} has no debug info, so '{expr}' cannot be resolved: rebuild with -g, or use NAME+OFFSET or an address")]
    NoDebugInfo {
        /// The variable.
        name: String,
        /// Its module.
        module: String,
        /// The whole expression.
        expr: String,
    },
    /// A thread-local variable: its address differs per thread.
    #[error("'{name}' is thread-local: every thread has its own copy, so it has no single address to watch; watch one thread's copy by address instead")]
    ThreadLocal {
        /// The variable.
        name: String,
    },
    /// The resolved address lies in no mapping of the process.
    #[error("address {addr:#x} of '{expr}' is not mapped in process {pid}: check the name, the offset, or /proc/{pid}/maps")]
    NotMapped {
        /// The expression.
        expr: String,
        /// The address.
        addr: u64,
        /// The process.
        pid: i32,
    },
    /// A raw address that is a symbol's link-time address in a
    /// position-independent file, not a run-time address.
    #[error("{addr:#x} is the link-time address of '{symbol}' in {module} (as nm/objdump print it), not a run-time address: {}", link_time_advice(*.pid, .symbol, *.runtime))]
    LinkTimeAddress {
        /// The address given.
        addr: u64,
        /// The symbol (+offset) at that link-time address.
        symbol: String,
        /// The position-independent file holding it.
        module: String,
        /// The running process it is not mapped in, if running.
        pid: Option<i32>,
        /// Where it is at run time, when the file is loaded.
        runtime: Option<u64>,
    },
    /// A range needs more breakpoint slots than are free.
    #[error("{len} bytes at {addr:#x} need {needs} breakpoint slots (x86 watches 1, 2, 4 or 8 naturally aligned bytes per slot) but only {free} are free: watch a smaller part (a field, or NAME/LEN)")]
    TooWide {
        /// Start of the range.
        addr: u64,
        /// Bytes in the range.
        len: u64,
        /// Slots the range needs.
        needs: usize,
        /// Slots available.
        free: usize,
    },
    /// An arithmetic overflow or zero length.
    #[error("'{expr}': {message}")]
    BadRange {
        /// The expression.
        expr: String,
        /// What is wrong.
        message: String,
    },
    /// Reading DWARF failed.
    #[error("cannot read the debug info of {}: {reason}", path.display())]
    Dwarf {
        /// The file.
        path: PathBuf,
        /// What gimli said.
        reason: String,
    },
    /// The PID names a kernel thread: no user memory, no symbols.
    #[error("process {pid} ({comm}) is a kernel thread: it has no user-space memory or symbols. Pass the PID of a user process (`ps -o pid,comm` shows kernel threads in [brackets])")]
    KernelThread {
        /// The PID.
        pid: i32,
        /// Its name.
        comm: String,
    },
}

fn link_time_advice(pid: Option<i32>, symbol: &str, runtime: Option<u64>) -> String {
    match (pid, runtime) {
        (Some(p), Some(r)) => format!(
            "it is not mapped in process {p}, where that file is loaded at a bias; watch '{symbol}' by name, or its run-time address {r:#x}"
        ),
        (Some(p), None) => format!(
            "it is not mapped in process {p}, where that file is loaded at a bias; watch '{symbol}' by name"
        ),
        _ => format!(
            "that file is loaded at an address chosen when it starts, so watch '{symbol}' by name (hwbreak adds the load address)"
        ),
    }
}

fn suggest_list(s: &[String]) -> String {
    if s.is_empty() {
        String::from(" (no close matches; is the program built with symbols?)")
    } else {
        format!(". Did you mean: {}?", s.join(", "))
    }
}

/// The rule behind a refused read of process `pid`'s `/proc` files (the
/// kernel's ptrace read-access check; Yama restricts attaching only).
fn read_rule(pid: i32, rule: Denied) -> String {
    match rule {
        Denied::OtherUser { owner, me } => crate::error::other_user_rule(owner, me),
        _ => format!("process {pid} is yours but not dumpable (setuid, or prctl(PR_SET_DUMPABLE, 0)), so only root (CAP_SYS_PTRACE) may read it; run as root"),
    }
}

impl SymbolError {
    /// A permission error on `path` of process `pid`.
    pub(crate) fn permission(pid: i32, path: impl Into<PathBuf>) -> Self {
        SymbolError::Permission {
            pid,
            path: path.into(),
            rule: crate::procfs::denied_for_task(pid),
        }
    }

    /// An I/O error on `path`, with a hint for the usual causes.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let hint = match source.kind() {
            std::io::ErrorKind::PermissionDenied => {
                String::from(" (permission denied: run as the file's owner or as root)")
            }
            _ => String::new(),
        };
        SymbolError::Io {
            path: path.into(),
            source,
            hint,
        }
    }
}
