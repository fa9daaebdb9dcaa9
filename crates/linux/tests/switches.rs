//! Context-switch records next to hits (`perf_event_attr.context_switch`,
//! no PMU needed): a watched multi-threaded target's threads depart and
//! arrive, every hit falls inside its thread's time on the CPU it reports,
//! and preempted and voluntary switches are told apart.
mod common;
use common::*;
use hwbreak_core::BpAttr;
use hwbreak_linux::record::SwitchEvent;
use hwbreak_linux::watch::{Callchain, Mode, Target as T, TaskRecord, Watcher};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Copy)]
enum Ev {
    Hit { tid: u32, cpu: u32 },
    Switch(SwitchEvent),
}

#[test]
fn switch_records_bracket_every_hit_and_tell_preempted_from_voluntary() {
    let _g = slots();
    let mut t = Target::spawn("switcher", &["150"]);
    let Some(w) = all_slots(
        Watcher::builder()
            .target(T::Process(t.pid))
            .watch("target_var", BpAttr::write(t.addr, 8))
            .mode(Mode::Sample {
                callchain: Callchain::Off,
                user_regs_stack: false,
            })
            .switch_events(true)
            .ring_pages(1024)
            .open(),
    ) else {
        return;
    };
    t.go();
    let mut evs: Vec<(u64, Ev)> = Vec::new();
    let drain = |evs: &mut Vec<(u64, Ev)>| {
        let evs = std::cell::RefCell::new(evs);
        w.drain_with_tasks(
            |h| {
                evs.borrow_mut().push((
                    h.sample.time,
                    Ev::Hit {
                        tid: h.tid(),
                        cpu: h.sample.cpu.0,
                    },
                ))
            },
            |r| {
                if let TaskRecord::Switch(e) = r {
                    evs.borrow_mut().push((e.time, Ev::Switch(e)));
                }
            },
        );
    };
    // Drain while it runs, so the rings never fill.
    let writes = std::thread::scope(|s| {
        let h = s.spawn(|| t.done());
        while !h.is_finished() {
            let _ = w.poll(Some(std::time::Duration::from_millis(20)));
            drain(&mut evs);
        }
        h.join().unwrap()
    });
    drain(&mut evs);
    assert_eq!(w.lost(), 0, "the test needs every record");
    evs.sort_by_key(|&(time, _)| time);
    let hits = evs
        .iter()
        .filter(|(_, e)| matches!(e, Ev::Hit { .. }))
        .count() as u64;
    assert_eq!(hits, writes, "one hit per write");

    // Replay: a thread is on a CPU from its switch-in to its switch-out.
    let mut on_cpu: BTreeMap<u32, Option<u32>> = BTreeMap::new();
    let (mut preempted, mut voluntary) = (BTreeSet::new(), BTreeSet::new());
    let mut switches = 0;
    for &(time, e) in &evs {
        match e {
            Ev::Switch(s) => {
                switches += 1;
                assert_eq!(s.pid, t.pid as u32, "a switch of another process");
                let was = on_cpu.insert(s.tid, (!s.out).then_some(s.cpu));
                if s.out {
                    // Out only from where it ran (unless this is its first record).
                    if let Some(prev) = was {
                        assert_eq!(
                            prev,
                            Some(s.cpu),
                            "tid {} out of CPU {} at {time} while on {prev:?}",
                            s.tid,
                            s.cpu
                        );
                    }
                    if s.preempt {
                        preempted.insert(s.tid);
                    } else {
                        voluntary.insert(s.tid);
                    }
                } else if let Some(prev) = was {
                    assert_eq!(prev, None, "tid {} in twice at {time}", s.tid);
                }
            }
            Ev::Hit { tid, cpu } => {
                // Unknown before its first switch record: then it was running.
                if let Some(&state) = on_cpu.get(&tid) {
                    assert_eq!(
                        state,
                        Some(cpu),
                        "tid {tid} hit on CPU {cpu} at {time} while {state:?}"
                    );
                }
            }
        }
    }
    let threads: BTreeSet<u32> = on_cpu.keys().copied().collect();
    println!(
        "{hits} hits, {switches} switch records of threads {threads:?}; preempted out: {preempted:?}, voluntary out: {voluntary:?}"
    );
    assert!(
        threads.len() >= 3,
        "switches of the 3 workers expected, saw {threads:?}"
    );
    assert!(
        switches >= 150,
        "the sleeper alone switches out 150 times, saw {switches}"
    );
    // The sleeper blocks in usleep: voluntary. Two spinners share CPU 0:
    // the scheduler preempts them.
    assert!(!voluntary.is_empty(), "no voluntary switch seen");
    assert!(
        !preempted.is_empty(),
        "no preempted switch seen (two spinners on CPU 0)"
    );
    t.finish();
}
