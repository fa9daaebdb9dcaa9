//! Configuring a request ([`WatcherBuilder`]) and opening it: arch rules
//! first (no system call for a request the CPU cannot do), then the attrs
//! ([`super::attr`]), the rings ([`super::drain`]), the all-or-nothing
//! attach ([`super::attach`]), and the [`Watcher`] that owns the result.

use super::attach::{attach_process, check_target, Attach, PerfDomain, Target};
use super::attr::{
    check_stack_bytes, event_attr, sample_layout, side_band_attr, Callchain, Mode, Watch, HW_SLOTS,
};
use super::drain::{Drain, Rings};
use super::member::{Member, OpenPlan};
use super::runtime::Watcher;
use crate::error::{Error, Result};
use crate::event::EventAttr;
use crate::launch::{Gated, Launched};
use crate::procfs;
use hwbreak_core::arch::x86_64::X86_64;
use hwbreak_core::arch::Arch;
use hwbreak_core::attr::BpAttr;
use hwbreak_core::fanout::Fanout;
use perf_event_open_sys::bindings as b;
use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

/// Configures and opens a [`Watcher`].
#[derive(Debug)]
pub struct WatcherBuilder {
    target: Option<Target>,
    watches: Vec<Watch>,
    mode: Mode,
    ring_pages: usize,
    task_events: bool,
    switch_events: bool,
    freeze: bool,
    no_aslr: bool,
    check_mapped: bool,
    arch: X86_64,
    /// `sig_data` base for sigtrap watchers (crate-private; see [`crate::sigtrap`]).
    pub(crate) sig_base: Option<u64>,
    user_regs: u64,
    filter: Option<std::sync::Arc<crate::filter::HitFilter>>,
    armed: Armed,
}

/// What to run once a launched command's watches are armed, before it runs.
#[derive(Default)]
struct Armed(Option<Box<dyn FnOnce() + Send>>);

impl std::fmt::Debug for Armed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Armed(Some)"
        } else {
            "Armed(None)"
        })
    }
}

impl Watcher {
    /// Start configuring a watcher.
    pub fn builder() -> WatcherBuilder {
        WatcherBuilder {
            target: None,
            watches: Vec::new(),
            mode: Mode::Count,
            ring_pages: 128,
            task_events: false,
            switch_events: false,
            freeze: true,
            no_aslr: true,
            check_mapped: true,
            arch: X86_64::default(),
            sig_base: None,
            user_regs: 0,
            filter: None,
            armed: Armed::default(),
        }
    }
}

impl WatcherBuilder {
    /// With [`Target::Launch`]: call `f` once every watch is armed, just
    /// before the command may run (to say "watching ..." before the
    /// program's own output, and never when opening fails).
    pub fn on_armed(mut self, f: impl FnOnce() + Send + 'static) -> Self {
        self.armed = Armed(Some(Box::new(f)));
        self
    }

    /// Where to watch (required).
    pub fn target(mut self, t: Target) -> Self {
        self.target = Some(t);
        self
    }

    /// Add a watch. At most 4 fit on x86-64.
    pub fn watch(mut self, name: impl Into<String>, attr: BpAttr) -> Self {
        self.watches.push(Watch {
            name: name.into(),
            attr,
        });
        self
    }

    /// Count (default) or sample.
    pub fn mode(mut self, m: Mode) -> Self {
        self.mode = m;
        self
    }

    /// Data pages per CPU ring (a power of two; default 128 = 512 KiB, about
    /// 4,500 hits with short callchains).
    pub fn ring_pages(mut self, pages: usize) -> Self {
        self.ring_pages = pages;
        self
    }

    /// Also report thread creation/exit and throttling ([`Watcher::drain_with_tasks`]).
    pub fn task_events(mut self, yes: bool) -> Self {
        self.task_events = yes;
        self
    }

    /// Also report the watched threads' context switches (sampling modes
    /// only): `perf_event_attr.context_switch` on the first watch's
    /// events, delivered as [`super::TaskRecord::Switch`] by
    /// [`Watcher::drain_with_tasks`], in the hits' rings and clock. Costs one
    /// record per switch in and out; needs no PMU.
    pub fn switch_events(mut self, yes: bool) -> Self {
        self.switch_events = yes;
        self
    }

    /// Freeze a process with ptrace while attaching (default on; see [`crate::threads`]).
    pub fn freeze(mut self, yes: bool) -> Self {
        self.freeze = yes;
        self
    }

    /// Launch with address-space randomisation off (default on, as gdb does).
    pub fn no_aslr(mut self, yes: bool) -> Self {
        self.no_aslr = yes;
        self
    }

    /// Also record these user registers with each sample (a mask of
    /// `PERF_REG_X86_*` bits, e.g. [`super::X86_64_REGS_USER_MASK`]), read with
    /// `hwbreak_core::events::Extension::reg`; [`crate::store`] needs them to tell the value
    /// each write left. Sampling modes only; each register costs 8 bytes
    /// per sample.
    pub fn user_regs(mut self, mask: u64) -> Self {
        self.user_regs = mask;
        self
    }

    /// Run `f`'s program for watch `i` at every hit of watch `i`: hits its
    /// condition rejects are counted but not sampled, and with a stop the
    /// first match stops the process (see [`crate::filter`]). `f` must
    /// have one program per watch.
    pub fn filter(mut self, f: std::sync::Arc<crate::filter::HitFilter>) -> Self {
        self.filter = Some(f);
        self
    }

    /// Check each watch against `/proc/PID/maps` first (default on).
    pub fn check_mapped(mut self, yes: bool) -> Self {
        self.check_mapped = yes;
        self
    }

    /// Open every event (all-or-nothing) and enable them.
    pub fn open(self) -> Result<Watcher> {
        open(self)
    }
}

/// Raise the soft fd limit to the hard one: a process target opens
/// threads x CPUs x watches events.
fn raise_nofile() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read/write one rlimit struct, a live local.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

fn online_cpus_i32() -> Result<Vec<i32>> {
    Ok(procfs::online_cpus()?
        .into_iter()
        .map(|c| c as i32)
        .collect())
}

fn open(bld: WatcherBuilder) -> Result<Watcher> {
    let WatcherBuilder {
        target,
        watches,
        mode,
        ring_pages,
        task_events,
        switch_events,
        freeze,
        no_aslr,
        check_mapped,
        arch,
        sig_base,
        user_regs,
        filter,
        armed,
    } = bld;
    let spec = sample_layout(mode, user_regs);
    let target = target.ok_or_else(|| Error::Invalid("no target: call .target(...)".into()))?;
    if watches.is_empty() {
        return Err(Error::Invalid("no watch: call .watch(name, attr)".into()));
    }
    let bpf: Vec<std::os::fd::RawFd> = match &filter {
        Some(f) if f.len() != watches.len() => {
            return Err(Error::Invalid(format!(
            "the filter has {} programs for {} watches: build it with one FilterWatch per watch",
            f.len(),
            watches.len()
        )))
        }
        Some(f) => (0..f.len()).map(|i| f.prog_fd(i)).collect(),
        None => Vec::new(),
    };
    if watches.len() > HW_SLOTS {
        return Err(Error::NoSlot {
            watch: watches[HW_SLOTS].name.clone(),
            held_by_us: watches[..HW_SLOTS].iter().map(|w| w.name.clone()).collect(),
            total: HW_SLOTS,
            other_users: 0,
        });
    }
    // Arch rules first: no syscall for a request the CPU cannot do.
    for w in &watches {
        arch.parse(&w.attr).map_err(|source| Error::Arch {
            watch: w.name.clone(),
            source,
        })?;
    }
    if let Mode::Sample {
        callchain: Callchain::Copied { stack_bytes },
        ..
    } = mode
    {
        check_stack_bytes(stack_bytes).map_err(Error::Invalid)?;
    }
    if !ring_pages.is_power_of_two() {
        return Err(Error::Invalid(format!(
            "ring size {ring_pages} pages: must be a power of two"
        )));
    }
    raise_nofile();
    let ring_bytes = (ring_pages * crate::ring::page_size()) as u32;

    // Who and where.
    let online = online_cpus_i32()?;
    let sampling = mode != Mode::Count;
    let mut pid = None;
    let mut attach = Attach::NotAProcess;
    let (members_cpu, inherit): (Option<Vec<i32>>, bool) = match &target {
        Target::Thread(t) => {
            check_target(*t, &watches, check_mapped)?;
            pid = Some(*t);
            (None, false)
        }
        Target::Process(p) => {
            check_target(*p, &watches, check_mapped)?;
            pid = Some(*p);
            (None, true)
        }
        Target::Cpu(c) => {
            if !online.contains(&(*c as i32)) {
                return Err(Error::NoSuchCpu {
                    cpu: *c,
                    online: procfs::online_cpus_text()?,
                });
            }
            (Some(vec![*c as i32]), false)
        }
        Target::AllCpus => (Some(online.clone()), false),
        Target::Launch(_) => (None, true),
    };
    let thread_cpus: Vec<i32> = if sampling { online.clone() } else { vec![-1] };

    // Per-watch attrs.
    let launch = matches!(target, Target::Launch(_));
    let attrs: Vec<EventAttr> = watches
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let mut a = event_attr(w, spec, ring_bytes)
                .inherit(inherit)
                .inherit_thread(inherit);
            if switch_events && i == 0 && spec.is_some() {
                a = a.context_switch(true);
            }
            if launch && !w.attr.disabled {
                a = a.enable_on_exec(true);
            }
            if let Some(base) = sig_base {
                a = a
                    .sigtrap(base | i as u64)
                    .sample_type(b::PERF_SAMPLE_ADDR as u64);
            }
            a
        })
        .collect();

    // Thread and mmap records, from an event of their own (see side_band_attr).
    let side_band = side_band_attr(spec, task_events, launch).map(|a| {
        let a = a.inherit(inherit).inherit_thread(inherit);
        if launch {
            a.enable_on_exec(true)
        } else {
            a
        }
    });

    // Rings: one per CPU, owned by a dummy event on this thread.
    let rings = match spec {
        Some(spec) => Rings::open(spec, members_cpu.as_deref().unwrap_or(&online), ring_pages)?,
        None => Rings::default(),
    };
    let ring_events = rings.events();

    let mut child = None;
    let fan = {
        let mut dom = PerfDomain {
            watches: &watches,
            plan: OpenPlan {
                attrs: &attrs,
                side_band: side_band.as_ref(),
                cpus: &thread_cpus,
                rings: &rings.of_cpu,
                ring_events: &ring_events,
                bpf: &bpf,
            },
            enable: !launch,
            skip_gone: matches!(target, Target::Process(_)),
            sigtrap: sig_base.is_some(),
        };
        let reg =
            |dom: &mut PerfDomain, ms: Vec<Member>| Fanout::register(dom, ms).map_err(|f| f.error);
        match target {
            Target::Cpu(_) | Target::AllCpus => reg(
                &mut dom,
                members_cpu.unwrap().into_iter().map(Member::Cpu).collect(),
            )?,
            Target::Thread(t) => reg(&mut dom, vec![Member::Thread(t)])?,
            Target::Launch(cmd) => {
                let gated = Gated::spawn(cmd, no_aslr)?;
                pid = Some(gated.pid());
                // On error `gated` drops: the child exits without running the program.
                let fan = reg(&mut dom, vec![Member::Thread(gated.pid())])?;
                if let Some(f) = armed.0 {
                    f();
                }
                child = Some(gated.release()?);
                fan
            }
            Target::Process(p) => {
                let attached = attach_process(&mut dom, p, freeze)?;
                attach = attached.how;
                attached.fan
            }
        }
    };
    drop(ring_events);

    // Map event ids to watches for sample decoding.
    let mut ids = HashMap::new();
    for (_, h) in fan.members() {
        for we in &h.events {
            if let Ok(id) = we.event.id() {
                ids.insert(id, we.watch);
            }
        }
    }
    Ok(Watcher {
        watches: RwLock::new(watches),
        base_attrs: RwLock::new(attrs),
        mode,
        members: Mutex::new(fan),
        drain: Drain::new(
            rings.rings,
            ids,
            spec,
            mode,
            pid,
            launch && side_band.is_some(),
        ),
        child: Launched::new(child),
        pid,
        attach,
    })
}
