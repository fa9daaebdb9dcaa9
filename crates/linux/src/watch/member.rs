//! One member of a request's fan-out domain (a thread, or a CPU) and how its
//! events are opened: [`open_member`], the single place that opens every
//! watch's events on a member and points them at the per-CPU rings. Used by
//! the fan-out domain ([`super::attach`]) and by the forked self-attach
//! helper ([`super::selfattach`]) alike.

use super::attr::Watch;
use crate::event::{Event, EventAttr};
use std::collections::HashMap;

/// A member of the fan-out domain: a thread, or a CPU (for CPU targets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Member {
    /// A thread id.
    Thread(i32),
    /// A CPU number.
    Cpu(i32),
}

/// One open event and the watch it belongs to.
#[derive(Debug)]
pub struct WatchEvent {
    /// Index of the watch in the request.
    pub watch: usize,
    /// The event.
    pub event: Event,
}

/// The events one member holds.
#[derive(Debug, Default)]
pub struct MemberEvents {
    /// One per watch and CPU the member was opened on.
    pub events: Vec<WatchEvent>,
    /// The side-band events (thread and mmap records), one per CPU, if the
    /// request has them.
    pub side_band: Vec<Event>,
}

impl MemberEvents {
    /// Enable the events of every watch not marked disabled. Cannot fail on
    /// a live event; a thread that exited meanwhile keeps its count.
    pub(crate) fn enable(&self, watches: &[Watch]) {
        for we in &self.events {
            if !watches[we.watch].attr.disabled {
                let _ = we.event.enable();
            }
        }
        for ev in &self.side_band {
            let _ = ev.enable();
        }
    }
}

/// What every member's events are opened with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpenPlan<'a> {
    /// One attr per watch.
    pub attrs: &'a [EventAttr],
    /// The side-band event's attr, if the request has one.
    pub side_band: Option<&'a EventAttr>,
    /// CPUs a thread member is opened on: `[-1]` (counting) or the online CPUs.
    pub cpus: &'a [i32],
    /// Per-CPU rings to redirect output to (sampling): ring index by CPU.
    pub rings: &'a HashMap<i32, usize>,
    /// The ring owners' events, by ring index.
    pub ring_events: &'a [&'a Event],
    /// A BPF program per watch to run at each hit (`PERF_EVENT_IOC_SET_BPF`,
    /// see [`crate::filter`]), or empty.
    pub bpf: &'a [std::os::fd::RawFd],
}

/// Which step of opening a member failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenStep {
    /// `perf_event_open` itself.
    Open,
    /// Pointing the event's output at the ring of this CPU.
    Redirect {
        /// The CPU whose ring refused.
        cpu: i32,
    },
    /// Attaching the watch's BPF program.
    Bpf,
}

/// Why [`open_member`] failed; every event it had opened is closed again.
#[derive(Debug)]
pub(crate) struct OpenFailure {
    /// The watch whose event failed (`None`: the side-band event).
    pub watch: Option<usize>,
    /// The step that failed.
    pub step: OpenStep,
    /// What the kernel said.
    pub error: std::io::Error,
}

impl OpenFailure {
    /// The thread is gone (`ESRCH` from `perf_event_open`): for a process
    /// target, a thread that exited during the attach, not an error.
    pub fn thread_gone(&self) -> bool {
        self.step == OpenStep::Open && self.error.raw_os_error() == Some(libc::ESRCH)
    }
}

/// Open every watch's events on member `m` (disabled, as the attrs say) and
/// redirect each to its CPU's ring. All or nothing: on a failure the events
/// opened so far are closed.
pub(crate) fn open_member(plan: &OpenPlan<'_>, m: Member) -> Result<MemberEvents, OpenFailure> {
    let one_cpu;
    let (pid, cpus): (i32, &[i32]) = match m {
        Member::Thread(t) => (t, plan.cpus),
        Member::Cpu(c) => {
            one_cpu = [c];
            (-1, &one_cpu)
        }
    };
    let mut h = MemberEvents::default();
    let open_one = |watch: Option<usize>, attr: &EventAttr, cpu: i32| {
        let event = Event::open(attr, pid, cpu, None).map_err(|error| OpenFailure {
            watch,
            step: OpenStep::Open,
            error,
        })?;
        if let Some(&ri) = plan.rings.get(&cpu) {
            event
                .set_output(plan.ring_events[ri])
                .map_err(|error| OpenFailure {
                    watch,
                    step: OpenStep::Redirect { cpu },
                    error,
                })?;
        }
        Ok(event)
    };
    for (watch, attr) in plan.attrs.iter().enumerate() {
        for &cpu in cpus {
            let event = open_one(Some(watch), attr, cpu)?;
            // Before the event is enabled: inherited copies take the
            // program when they are made.
            if let Some(&prog) = plan.bpf.get(watch) {
                event.set_bpf(prog).map_err(|error| OpenFailure {
                    watch: Some(watch),
                    step: OpenStep::Bpf,
                    error,
                })?;
            }
            h.events.push(WatchEvent { watch, event });
        }
    }
    if let Some(attr) = plan.side_band {
        for &cpu in cpus {
            h.side_band.push(open_one(None, attr, cpu)?);
        }
    }
    Ok(h)
}
