//! From SPECs and a target to the breakpoints to open: parse, resolve names
//! in the target's symbols, apply defaults, split wide variables over slots.

use crate::cli::TargetArgs;
use crate::error::CliError;
use crate::spec::{self, Location, Spec};
use hwbreak_core::{Access, BpAttr};
use hwbreak_linux::symbols::{split_into_slots, Resolved, Resolver, SymbolError, ValueKind};

/// Where a PIE executable is loaded when address randomisation is off
/// (x86-64 `ELF_ET_DYN_BASE` = 2/3 of the 47-bit user space, page aligned).
/// Launched commands run with randomisation off, as under gdb.
pub const NO_ASLR_PIE_BASE: u64 = 0x5555_5555_4000;

/// What hwbreak watches.
#[derive(Debug, Clone)]
pub enum TargetKind {
    /// Every thread of a running process.
    Pid(i32),
    /// One thread.
    Tid(i32),
    /// Every CPU.
    AllCpus,
    /// A command launched by hwbreak.
    Launch(Vec<String>),
}

/// One user-level watch (it may take several slots).
#[derive(Debug, Clone)]
pub struct PlannedWatch {
    /// Name shown to the user.
    pub name: String,
    /// First byte.
    pub addr: u64,
    /// Bytes.
    pub len: u64,
    /// Access.
    pub access: Access,
    /// How to print values.
    pub kind: ValueKind,
    /// The type name, if known.
    pub type_name: Option<String>,
    /// The address came from a link-time PIE address plus [`NO_ASLR_PIE_BASE`]
    /// and must be checked once the program runs.
    pub rebased: bool,
}

impl PlannedWatch {
    /// `STATE.hits (AtomicU64, 8 bytes at 0x5555555c43b8, w)`, for the banner.
    pub fn describe(&self) -> String {
        let ty = self
            .type_name
            .as_deref()
            .map(|t| format!("{t}, "))
            .unwrap_or_default();
        format!(
            "{} ({ty}{} bytes at {:#x}, {})",
            self.name,
            self.len,
            self.addr,
            self.access.short()
        )
    }
}

/// The breakpoints to open.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Where.
    pub target: TargetKind,
    /// User-level watches.
    pub watches: Vec<PlannedWatch>,
    /// One breakpoint per slot: `(watch index, attribute)`.
    pub pieces: Vec<(usize, BpAttr)>,
}

/// The target named by `-p`, `-t`, `-a` or `-- CMD` (exactly one).
pub fn target_of(t: &TargetArgs) -> Result<TargetKind, CliError> {
    let n = usize::from(t.pid.is_some())
        + usize::from(t.tid.is_some())
        + usize::from(t.all_cpus)
        + usize::from(!t.command.is_empty());
    if n == 0 {
        return Err(CliError::usage(
            "no target: give -p PID, -t TID, -a, or a command after `--` (e.g. `hwbreak watch STATE.hits -- ./demo`)",
        ));
    }
    if n > 1 {
        return Err(CliError::usage(
            "more than one target: give only one of -p PID, -t TID, -a, or `-- CMD`",
        ));
    }
    for (flag, v) in [("-p", t.pid), ("-t", t.tid)] {
        if let Some(p) = v {
            if p <= 0 {
                return Err(CliError::usage(format!(
                    "{flag} {p}: a process or thread id is a positive number"
                )));
            }
        }
    }
    Ok(match (t.pid, t.tid) {
        (Some(p), _) => TargetKind::Pid(p),
        (_, Some(t)) => TargetKind::Tid(t),
        _ if t.all_cpus => TargetKind::AllCpus,
        _ => TargetKind::Launch(t.command.clone()),
    })
}

/// A plan, or a launched command whose SPECs resolve only once it is loaded.
#[derive(Debug, Clone)]
pub enum Planned {
    /// Every SPEC resolved: open the watches.
    Ready(Plan),
    /// A launched command with a SPEC in a shared library (`libfoo.so:x`, or
    /// a name its executable does not define): start it stopped at its entry
    /// point with [`crate::launch_lib::start`], which plans it with
    /// [`plan_loaded`].
    AtEntry(Vec<String>),
}

/// Parse every SPEC, resolve it for the target, and split it over slots.
/// A launched command is resolved in its executable before it starts; when
/// that cannot be done, the answer is [`Planned::AtEntry`].
pub fn plan(t: &TargetArgs) -> Result<Planned, CliError> {
    let target = target_of(t)?;
    let specs = parse_specs(t)?;
    let launch = match &target {
        TargetKind::Launch(cmd) => Some(cmd),
        _ => None,
    };
    // A library's variables get their address once ld.so has mapped it.
    let in_library = specs.iter().any(|s| {
        matches!(
            &s.location,
            Location::Symbol {
                module: Some(_),
                ..
            }
        )
    });
    if let (Some(cmd), true) = (launch, in_library) {
        return Ok(Planned::AtEntry(cmd.clone()));
    }
    let needs_symbols = specs
        .iter()
        .any(|s| matches!(s.location, Location::Symbol { .. }));
    let resolver = if needs_symbols {
        Some(match &target {
            TargetKind::Pid(p) | TargetKind::Tid(p) => {
                if !std::path::Path::new(&format!("/proc/{p}")).exists() {
                    return Err(CliError::new(format!(
                        "process {p} does not exist (it exited, or the PID is wrong); check it with `ps -p {p}` and pass a live PID"
                    )));
                }
                Resolver::for_pid(*p).map_err(CliError::Symbol)?
            }
            TargetKind::Launch(cmd) => match Resolver::for_exe(&cmd[0]) {
                Ok(r) => r,
                // A `#!` script or other non-ELF command: names are looked up
                // in the program it runs (its interpreter, or what a wrapper
                // `exec`s), once that is loaded.
                Err(SymbolError::BadElf { .. }) => return Ok(Planned::AtEntry(cmd.clone())),
                Err(e) => return Err(CliError::Symbol(e)),
            },
            TargetKind::AllCpus => {
                return Err(CliError::usage(
                    "with -a (all CPUs) there is no process to look names up in: give addresses (0x...), or watch a process with -p PID",
                ))
            }
        })
    } else {
        None
    };
    let mut resolved = Vec::new();
    for s in &specs {
        let r = match (&s.location, &resolver) {
            (Location::Symbol { .. }, Some(r)) => match r.resolve(&s.location_text()) {
                Ok(res) => Some(res),
                // Not in the executable: it may be in a library it loads,
                // which is known once the program is loaded.
                Err(SymbolError::NotFound { .. }) if launch.is_some() => {
                    return Ok(Planned::AtEntry(launch.cloned().unwrap_or_default()));
                }
                Err(e) => return Err(CliError::Symbol(e)),
            },
            _ => None,
        };
        resolved.push(r);
    }
    check_raw_addresses(&target, &specs, resolver.as_ref())?;
    build(target, t, &specs, resolved).map(Planned::Ready)
}

/// Refuse raw addresses that are link-time addresses of a PIE's or shared
/// library's symbols (see [`Resolver::check_raw_address`]). Best effort: a
/// target whose files cannot be read is not checked.
fn check_raw_addresses(
    target: &TargetKind,
    specs: &[Spec],
    resolver: Option<&Resolver>,
) -> Result<(), CliError> {
    let addrs: Vec<u64> = specs
        .iter()
        .filter_map(|s| match s.location {
            Location::Addr(a) => Some(a),
            _ => None,
        })
        .collect();
    if addrs.is_empty() {
        return Ok(());
    }
    let own;
    let r = match resolver {
        Some(r) => r,
        None => {
            own = match target {
                TargetKind::Pid(p) | TargetKind::Tid(p) => Resolver::for_pid(*p).ok(),
                TargetKind::Launch(cmd) => Resolver::for_exe(&cmd[0]).ok(),
                TargetKind::AllCpus => None,
            };
            match &own {
                Some(r) => r,
                None => return Ok(()),
            }
        }
    };
    for a in addrs {
        r.check_raw_address(a).map_err(CliError::Symbol)?;
    }
    Ok(())
}

/// Plan a launched command that is loaded: process `pid` (launched from
/// `t`'s command) stopped at its entry point, every library it needs mapped
/// where it will stay. SPECs resolve from `/proc/PID/maps` as with `-p`.
pub fn plan_loaded(t: &TargetArgs, pid: i32) -> Result<Plan, CliError> {
    let target = target_of(t)?;
    let specs = parse_specs(t)?;
    let program = t.command.first().map(String::as_str).unwrap_or("?");
    let r = Resolver::for_pid(pid).map_err(CliError::Symbol)?;
    let mut resolved = Vec::new();
    for s in &specs {
        resolved.push(match &s.location {
            Location::Symbol { .. } => {
                Some(r.resolve(&s.location_text()).map_err(|e| match e {
                    SymbolError::NoModule { module, loaded, .. } => CliError::new(format!(
                        "no library '{module}' is loaded by `{program}` at its entry point; loaded: {loaded}. Check the library's name; a library the program opens later with dlopen() is not loaded yet at its entry point: start the program, then attach with -p PID once it is loaded"
                    )),
                    // Name the command, not the pid of a process about to be killed.
                    SymbolError::NotFound {
                        name,
                        searched,
                        suggestions,
                    } => CliError::Symbol(SymbolError::NotFound {
                        name,
                        searched: searched.replacen(
                            &format!("process {pid}"),
                            &format!("`{program}`"),
                            1,
                        ),
                        suggestions,
                    }),
                    e => CliError::Symbol(e),
                })?)
            }
            Location::Addr(_) => None,
        });
    }
    build(target, t, &specs, resolved)
}

fn parse_specs(t: &TargetArgs) -> Result<Vec<Spec>, CliError> {
    Ok(t.specs
        .iter()
        .map(|s| spec::parse(s))
        .collect::<Result<_, _>>()?)
}

/// From resolved SPECs (`resolved[i]` is SPEC i's symbol, `None` for an
/// address) to watches and slot pieces.
fn build(
    target: TargetKind,
    t: &TargetArgs,
    specs: &[Spec],
    resolved: Vec<Option<Resolved>>,
) -> Result<Plan, CliError> {
    let mut watches = Vec::new();
    for ((s, text), res) in specs.iter().zip(&t.specs).zip(resolved) {
        watches.push(resolve_one(s, text, res));
    }
    let mut pieces = Vec::new();
    for (i, (w, s)) in watches.iter().zip(specs).enumerate() {
        if w.access == Access::Execute {
            pieces.push((i, BpAttr::exec(w.addr)));
            continue;
        }
        // A length the user gave is passed as is (the arch says if it is bad);
        // a variable's own size is covered with as few aligned slots as needed.
        if s.len.is_some() && w.len <= 8 {
            pieces.push((i, BpAttr::new(w.addr, w.len, w.access)));
            continue;
        }
        let parts = split_into_slots(w.addr, w.len);
        if parts.is_empty() {
            return Err(CliError::new(format!(
                "watch `{}`: {:#x}+{} wraps around the address space; give a smaller /LEN",
                w.name, w.addr, w.len
            )));
        }
        for (a, l) in parts {
            pieces.push((i, BpAttr::new(a, l, w.access)));
        }
    }
    kernel_half(&target, &watches, &mut pieces)?;
    let slots = crate::sys::SLOTS_PER_CPU;
    if pieces.len() > slots {
        let detail: Vec<String> = watches
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let n = pieces.iter().filter(|p| p.0 == i).count();
                format!("{} takes {n}", w.name)
            })
            .collect();
        return Err(CliError::new(format!(
            "these watches need {} hardware slots but the CPU has {slots} ({}); a watch wider than 8 bytes takes one slot per 8 bytes: watch fewer or narrower locations (a field, an element, or /LEN)",
            pieces.len(),
            detail.join(", ")
        )));
    }
    Ok(Plan {
        target,
        watches,
        pieces,
    })
}

/// Where the x86-64 kernel half starts (canonical addresses with bit 63 set).
const KERNEL_HALF: u64 = 0xffff_8000_0000_0000;

/// Kernel-half pieces: with `-a` they are privileged (the perf event counts
/// in the kernel too, `exclude_kernel = 0`; the kernel then needs root or
/// CAP_PERFMON); on a process or thread target they are refused here, naming
/// `-a`, since a per-task event never sees the kernel's own accesses.
fn kernel_half(
    target: &TargetKind,
    watches: &[PlannedWatch],
    pieces: &mut [(usize, BpAttr)],
) -> Result<(), CliError> {
    for (i, attr) in pieces.iter_mut() {
        if attr.addr < KERNEL_HALF {
            continue;
        }
        if matches!(target, TargetKind::AllCpus) {
            attr.privileged = true;
            continue;
        }
        return Err(CliError::new(format!(
            "watch `{}`: address {:#x} is in the kernel half, which a process or thread target cannot watch; watch it on every CPU with -a, as root (e.g. `hwbreak stat -a {}`)",
            watches[*i].name, attr.addr, watches[*i].name
        )));
    }
    Ok(())
}

/// One SPEC's watch: `res` is its resolved symbol (`None` for an address).
fn resolve_one(s: &Spec, text: &str, res: Option<Resolved>) -> PlannedWatch {
    let Some(res) = res else {
        let a = match s.location {
            Location::Addr(a) => a,
            Location::Symbol { .. } => unreachable!("every symbol SPEC is resolved first"),
        };
        let access = s.access.unwrap_or(if s.perf_form {
            Access::ReadWrite
        } else {
            Access::Write
        });
        let default_len = if s.perf_form { 4 } else { 8 };
        let len = if access == Access::Execute {
            1
        } else {
            s.len.unwrap_or(default_len)
        };
        return PlannedWatch {
            name: text.to_string(),
            addr: a,
            len,
            access,
            kind: if access == Access::Execute {
                ValueKind::Code
            } else {
                ValueKind::Unsigned
            },
            type_name: None,
            rebased: false,
        };
    };
    let access = s.access.unwrap_or(if res.is_function() {
        Access::Execute
    } else {
        Access::Write
    });
    let len = if access == Access::Execute {
        1
    } else {
        s.len.unwrap_or(res.len)
    };
    let (addr, rebased) = if res.needs_rebase {
        (res.addr.wrapping_add(NO_ASLR_PIE_BASE), true)
    } else {
        (res.addr, false)
    };
    let kind = if access == Access::Execute {
        ValueKind::Code
    } else {
        res.value_kind
    };
    PlannedWatch {
        name: res.name,
        addr,
        len,
        access,
        kind,
        type_name: res.type_name,
        rebased,
    }
}

/// After launch: check that the program was loaded where the rebased
/// addresses assumed (the no-ASLR base is a kernel convention, so verify it
/// from `/proc/PID/maps`: the executable's first mapping).
pub fn verify_rebased(
    plan: &Plan,
    maps: &[hwbreak_linux::symbols::MapEntry],
    pid: i32,
) -> Result<(), CliError> {
    if !plan.watches.iter().any(|w| w.rebased) {
        return Ok(());
    }
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    if exe.is_empty() {
        // Gone already (a zombie's exe link cannot be read): nothing ran at
        // a wrong address for long; counts stand.
        return Ok(());
    }
    let base = maps
        .iter()
        .filter(|m| m.path == exe && m.offset == 0)
        .map(|m| m.start)
        .min();
    match base {
        Some(b) if b == NO_ASLR_PIE_BASE => Ok(()),
        Some(b) => Err(CliError::new(format!(
            "the launched program was loaded at {b:#x}, not at {NO_ASLR_PIE_BASE:#x} as expected with address randomisation off; start the program and attach with -p PID instead"
        ))),
        // Already gone: nothing ran at a wrong address for long; counts stand.
        None => Ok(()),
    }
}

/// Format a watched value (little-endian `len` bytes) for display.
pub fn format_value(v: u64, len: u64, kind: ValueKind) -> String {
    let bits = (len.min(8) * 8) as u32;
    let v = if bits < 64 {
        v & ((1u64 << bits) - 1)
    } else {
        v
    };
    match kind {
        ValueKind::Signed => {
            let sh = 64 - bits;
            (((v << sh) as i64) >> sh).to_string()
        }
        ValueKind::Unsigned => v.to_string(),
        ValueKind::Float if len == 4 => format!("{}", f32::from_bits(v as u32)),
        ValueKind::Float if len == 8 => format!("{}", f64::from_bits(v)),
        ValueKind::Bool if v <= 1 => (v == 1).to_string(),
        ValueKind::Pointer => format!("{v:#x}"),
        _ => format!("{v:#0w$x}", w = 2 + 2 * len.min(8) as usize),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_shown_by_kind() {
        assert_eq!(format_value(0xffff_ffff, 4, ValueKind::Signed), "-1");
        assert_eq!(format_value(42, 8, ValueKind::Unsigned), "42");
        assert_eq!(format_value(1, 1, ValueKind::Bool), "true");
        assert_eq!(format_value(1.5f64.to_bits(), 8, ValueKind::Float), "1.5");
        assert_eq!(format_value(0xab, 2, ValueKind::Bytes), "0x00ab");
        assert_eq!(
            format_value(0x1234_5678_9abc, 8, ValueKind::Pointer),
            "0x123456789abc"
        );
    }

    fn args(pid: Option<i32>, all: bool, cmd: &[&str]) -> TargetArgs {
        TargetArgs {
            pid,
            tid: None,
            all_cpus: all,
            specs: vec!["x".into()],
            command: cmd.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn exactly_one_target_is_required() {
        assert!(target_of(&args(None, false, &[]))
            .unwrap_err()
            .to_string()
            .contains("no target"));
        assert!(target_of(&args(Some(1), true, &[]))
            .unwrap_err()
            .to_string()
            .contains("more than one"));
        assert!(target_of(&args(Some(-3), false, &[]))
            .unwrap_err()
            .to_string()
            .contains("positive"));
        assert!(matches!(
            target_of(&args(None, false, &["ls"])),
            Ok(TargetKind::Launch(_))
        ));
    }

    #[test]
    fn raw_address_defaults_follow_the_form() {
        let mut a = args(Some(std::process::id() as i32), false, &[]);
        a.specs = vec!["0x1000".into(), "mem:0x2000".into(), "0x3000:x".into()];
        let Planned::Ready(p) = plan(&a).unwrap() else {
            panic!("an attached target is planned at once")
        };
        assert_eq!((p.watches[0].len, p.watches[0].access), (8, Access::Write));
        assert_eq!(
            (p.watches[1].len, p.watches[1].access),
            (4, Access::ReadWrite)
        );
        assert_eq!(
            (p.watches[2].len, p.watches[2].access),
            (1, Access::Execute)
        );
    }

    #[test]
    fn too_many_slots_is_refused_before_any_syscall() {
        let mut a = args(Some(std::process::id() as i32), false, &[]);
        a.specs = vec!["0x1000/8".into(); 5];
        let e = plan(&a).unwrap_err();
        assert!(e.to_string().contains("need 5 hardware slots"), "{e}");
    }
}
