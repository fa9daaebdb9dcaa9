//! The [`Watcher`]: an open request at run time. Counts, enable and disable,
//! modify in place with rollback, and the hand-off to the drain
//! ([`super::drain`]) and to a launched command ([`crate::launch`]).

use super::attach::{above_user_space, Attach, USER_SPACE_END};
use super::attr::{Mode, Watch, HW_SLOTS};
use super::drain::{Drain, TaskRecord};
use super::member::{Member, MemberEvents};
use crate::error::{Error, Result};
use crate::event::{Count, Event, EventAttr};
use crate::launch::Launched;
use hwbreak_core::arch::x86_64::X86_64;
use hwbreak_core::arch::Arch;
use hwbreak_core::attr::BpAttr;
use hwbreak_core::events::Extended;
use hwbreak_core::fanout::Fanout;
use std::process::{Child, ExitStatus};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

/// An open set of watches. Drop closes every event (unregisters every
/// breakpoint, including inherited copies) and unmaps the rings.
#[derive(Debug)]
pub struct Watcher {
    pub(super) watches: RwLock<Vec<Watch>>,
    /// The attrs every watch was opened with (modify starts from them).
    pub(super) base_attrs: RwLock<Vec<EventAttr>>,
    pub(super) mode: Mode,
    pub(super) members: Mutex<Fanout<Member, MemberEvents>>,
    pub(super) drain: Drain,
    pub(super) child: Launched,
    pub(super) pid: Option<i32>,
    pub(super) attach: Attach,
}

impl Watcher {
    /// The watches, in index order.
    pub fn watches(&self) -> Vec<Watch> {
        self.watches.read().unwrap().clone()
    }

    /// A watch's name (empty if out of range).
    pub fn watch_name(&self, idx: usize) -> String {
        self.watches
            .read()
            .unwrap()
            .get(idx)
            .map(|w| w.name.clone())
            .unwrap_or_default()
    }

    /// The mode it was opened in.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The watched (or launched) process, if the target is one.
    pub fn pid(&self) -> Option<i32> {
        self.pid
    }

    /// How the threads of a process target were attached.
    pub fn attach(&self) -> &Attach {
        &self.attach
    }

    /// How many threads (or CPUs) events were opened on directly (threads
    /// created later carry inherited copies and are not counted here).
    pub fn members(&self) -> usize {
        self.members.lock().unwrap().len()
    }

    /// How many perf fds this watcher holds (rings included).
    pub fn fds(&self) -> usize {
        let m = self.members.lock().unwrap();
        m.members()
            .map(|(_, h)| h.events.len() + h.side_band.len())
            .sum::<usize>()
            + self.drain.ring_count()
    }

    /// Exact hits per watch, summed over every thread/CPU and every inherited
    /// copy (live or exited).
    pub fn counts(&self) -> Result<Vec<u64>> {
        Ok(self.count_details()?.iter().map(|c| c.value).collect())
    }

    /// Per-watch [`Count`] sums (value, time enabled, time running).
    pub fn count_details(&self) -> Result<Vec<Count>> {
        let n = self.watches.read().unwrap().len();
        let mut out = vec![Count::default(); n];
        let m = self.members.lock().unwrap();
        for (_, h) in m.members() {
            for we in &h.events {
                let c = we
                    .event
                    .read_count()
                    .map_err(|e| Error::sys("read a counter", e))?;
                let o = &mut out[we.watch];
                o.value += c.value;
                o.time_enabled += c.time_enabled;
                o.time_running += c.time_running;
                o.id = c.id;
                o.lost += c.lost;
            }
        }
        Ok(out)
    }

    /// Enable every watch's events.
    pub fn enable(&self) -> Result<()> {
        self.set_disabled(false)?;
        self.each_event(|_, ev| ev.enable().map_err(|e| Error::sys("enable", e)))
    }

    /// Disable every watch's events (they keep their slots).
    pub fn disable(&self) -> Result<()> {
        self.set_disabled(true)?;
        self.each_event(|_, ev| ev.disable().map_err(|e| Error::sys("disable", e)))
    }

    fn set_disabled(&self, yes: bool) -> Result<()> {
        for w in self.watches.write().unwrap().iter_mut() {
            w.attr.disabled = yes;
        }
        Ok(())
    }

    fn each_event(&self, mut f: impl FnMut(usize, &Event) -> Result<()>) -> Result<()> {
        let m = self.members.lock().unwrap();
        for (_, h) in m.members() {
            for we in &h.events {
                f(we.watch, &we.event)?;
            }
        }
        Ok(())
    }

    /// Change watch `idx` in place (`PERF_EVENT_IOC_MODIFY_ATTRIBUTES`) on
    /// every thread/CPU and its inherited copies. Checked against the arch
    /// rules first; if any event refuses, the ones already changed are put
    /// back and the old shape stays.
    /// The new attr's `disabled` decides whether the watch is armed after the change.
    pub fn modify(&self, idx: usize, attr: BpAttr) -> Result<()> {
        let mut watches = self.watches.write().unwrap();
        let name = match watches.get(idx) {
            Some(w) => w.name.clone(),
            None => return Err(Error::Invalid(format!("no watch number {idx}"))),
        };
        X86_64::default()
            .parse(&attr)
            .map_err(|source| Error::Arch {
                watch: name.clone(),
                source,
            })?;
        let old = watches[idx].attr;
        let mut base = self.base_attrs.write().unwrap();
        // The kernel compares the whole attr except the breakpoint fields, so
        // start from what we opened with, and keep `disabled` set as opened.
        let new_a = base[idx].with_bp(&BpAttr {
            disabled: true,
            ..attr
        });
        let old_a = base[idx].with_bp(&BpAttr {
            disabled: true,
            ..old
        });
        let m = self.members.lock().unwrap();
        let evs: Vec<&Event> = m
            .members()
            .flat_map(|(_, h)| h.events.iter().filter(|we| we.watch == idx))
            .map(|we| &we.event)
            .collect();
        let applied = apply_all(
            &evs,
            |ev| ev.modify(&new_a.disabled(attr.disabled)),
            |ev| {
                let _ = ev.modify(&old_a.disabled(old.disabled));
            },
        );
        if let Err((k, e)) = applied {
            let probe = Watch {
                name: name.clone(),
                attr,
            };
            // The kernel disables an event before modifying it and re-enables it
            // only if the attr it was *opened* with said enabled; ours were opened
            // disabled (enabled later by ioctl), so put the failed one back on.
            if !old.disabled {
                let _ = evs[k].enable();
            }
            return Err(match e.raw_os_error() {
                Some(libc::ENOSPC) => Error::NoSlot {
                    watch: name.clone(),
                    held_by_us: watches
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| *i != idx)
                        .map(|(_, w)| w.name.clone())
                        .collect(),
                    total: HW_SLOTS,
                    other_users: 0,
                },
                Some(libc::EINVAL) if above_user_space(&probe) => Error::AboveUserSpace {
                    watch: name.clone(),
                    addr: attr.addr,
                    len: attr.len,
                    limit: USER_SPACE_END,
                },
                Some(libc::EINVAL) if attr.privileged => crate::procfs::permission_error(
                    format!("move watch `{name}` to kernel address {:#x}", attr.addr),
                    libc::EINVAL,
                    crate::error::Denied::KernelAddress,
                ),
                _ => Error::sys(format!("modify watch `{name}`"), e),
            });
        }
        watches[idx].attr = attr;
        base[idx] = new_a;
        Ok(())
    }

    /// Block until a ring has records to drain (or `timeout`); returns whether
    /// data is ready. Counting watchers return `false` at once.
    pub fn poll(&self, timeout: Option<Duration>) -> Result<bool> {
        self.drain.poll(timeout)
    }

    /// Give the calling thread (a drain loop) priority over the watched
    /// program's threads: `SCHED_FIFO` priority 1 if allowed, else nice -10.
    /// A drainer at normal priority competing with many busy threads on few
    /// CPUs may not run for 100 ms, and a ring then fills and loses records.
    /// Returns which policy was applied.
    pub fn boost_current_thread() -> Result<&'static str> {
        super::drain::boost_current_thread()
    }

    /// Hand every pending hit to `f` (oldest first per CPU). Safe to call
    /// from a dedicated thread while others read counts. Returns the number of hits.
    pub fn drain(&self, mut f: impl FnMut(&Extended<'_>)) -> u64 {
        self.drain.drain_with_tasks(&mut f, |_| {})
    }

    /// [`Self::drain`], also reporting fork/exit/throttle records.
    pub fn drain_with_tasks(
        &self,
        f: impl FnMut(&Extended<'_>),
        task: impl FnMut(TaskRecord<'_>),
    ) -> u64 {
        self.drain.drain_with_tasks(f, task)
    }

    /// Hits the kernel could not record because a ring was full. Exact and
    /// immediate where the kernel reports per-event losses (`PERF_FORMAT_LOST`,
    /// Linux 6.0): the watches' own losses, never a lost thread or mmap
    /// record (those are [`Watcher::lost_side_band`]). On older kernels the
    /// sum of `PERF_RECORD_LOST` records drained so far (the kernel writes
    /// one only once space frees up again), which does not say what was
    /// lost and so includes lost side-band records.
    pub fn lost(&self) -> u64 {
        let from_records = self.drain.lost_from_records();
        if !self.drain.events_read_lost() {
            return from_records;
        }
        match self.count_details() {
            Ok(c) => c.iter().map(|c| c.lost).sum(),
            Err(_) => from_records,
        }
    }

    /// Side-band records (thread creation and exit, a launched program's
    /// mmaps) the kernel could not write because a ring was full. Counted
    /// apart from [`Watcher::lost`] where the kernel reports per-event
    /// losses (Linux 6.0); 0 otherwise, or without side-band records.
    pub fn lost_side_band(&self) -> u64 {
        if !self.drain.events_read_lost() {
            return 0;
        }
        let m = self.members.lock().unwrap();
        m.members()
            .flat_map(|(_, h)| h.side_band.iter())
            .filter_map(|ev| ev.read_count().ok())
            .map(|c| c.lost)
            .sum()
    }

    /// Records that crossed the end of a ring and were copied (the rest were
    /// handed out in place).
    pub fn wrapped(&self) -> u64 {
        self.drain.wrapped()
    }

    /// Records that did not parse (0 unless something is badly wrong).
    pub fn malformed(&self) -> u64 {
        self.drain.malformed()
    }

    /// For a launched command: wait for it to exit. Counts stay readable after.
    pub fn wait(&self) -> Result<ExitStatus> {
        self.child.wait()
    }

    /// Take charge of a command started outside the watcher, so that
    /// [`Watcher::wait`], [`Watcher::try_wait`] and the `take_child_*`
    /// methods work as for [`super::Target::Launch`]. For a command stopped at its
    /// entry point by [`crate::launch::StoppedAtEntry`]: open the watcher on
    /// `Target::Process(pid)`, call `resume()`, and adopt the `Child` it
    /// returns. Gives `child` back, untouched, if this watcher does not
    /// watch `child`'s process.
    pub fn adopt_child(&self, child: Child) -> std::result::Result<(), Child> {
        if self.pid != Some(child.id() as i32) {
            return Err(child);
        }
        self.child.adopt(child);
        Ok(())
    }

    /// For a launched command: take its stdin (if it was `Stdio::piped()`).
    pub fn take_child_stdin(&self) -> Option<std::process::ChildStdin> {
        self.child.take_stdin()
    }

    /// For a launched command: take its stdout (if it was `Stdio::piped()`).
    pub fn take_child_stdout(&self) -> Option<std::process::ChildStdout> {
        self.child.take_stdout()
    }

    /// For a launched command: its exit status if it has exited.
    pub fn try_wait(&self) -> Result<Option<ExitStatus>> {
        self.child.try_wait()
    }
}

/// Apply `apply` to every item in order; on the first failure, `undo` the
/// items already applied, newest first, and return which failed. The
/// all-or-nothing rule of modify-in-place.
pub(crate) fn apply_all<T, E>(
    items: &[T],
    mut apply: impl FnMut(&T) -> std::result::Result<(), E>,
    mut undo: impl FnMut(&T),
) -> std::result::Result<(), (usize, E)> {
    for (k, it) in items.iter().enumerate() {
        if let Err(e) = apply(it) {
            for back in items[..k].iter().rev() {
                undo(back);
            }
            return Err((k, e));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_all_rolls_back_newest_first_when_item_k_fails() {
        for k in 0..5usize {
            let items: Vec<usize> = (0..5).collect();
            let mut log = Vec::new();
            let log_ref = std::cell::RefCell::new(&mut log);
            let r = apply_all(
                &items,
                |&i| {
                    log_ref.borrow_mut().push(("apply", i));
                    if i == k {
                        Err("refused")
                    } else {
                        Ok(())
                    }
                },
                |&i| log_ref.borrow_mut().push(("undo", i)),
            );
            assert_eq!(r, Err((k, "refused")));
            let undone: Vec<usize> = log.iter().filter(|e| e.0 == "undo").map(|e| e.1).collect();
            assert_eq!(undone, (0..k).rev().collect::<Vec<_>>(), "k={k}");
        }
    }
}
