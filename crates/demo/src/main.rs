//! `hwbreak-demo`: the bundled example target for hwbreak.
//!
//! A multi-threaded PIE program with one struct global, [`STATE`], written from
//! several named functions ([`record_hit`], [`note_writer`], [`bump_table`]).
//! Threads start at two moments ("early" and "late") so a watcher can check that
//! threads created after it attached are watched too. Every count is exact and
//! printed up front, so tests and the README can compare against it.
//!
//! ```text
//! hwbreak-demo [--iterations N] [--delay-ms D] [--early E] [--late L]
//!              [--late-after-ms T] [--wait]
//! ```
//!
//! * `--iterations N` (default 20): rounds per worker thread. One round writes
//!   `STATE.hits` once, `STATE.last_writer` once, `STATE.table[round % 8]` once
//!   and `STATE.total` once.
//! * `--delay-ms D` (default 100): sleep between rounds.
//! * `--early E` (default 2): workers created at start.
//! * `--late L` (default 2): workers created later.
//! * `--late-after-ms T` (default 500): without `--wait`, start the late
//!   workers this long after the early ones.
//! * `--wait`: early workers are created but blocked; the program prints
//!   `ready` and waits for one line on stdin (attach with `-p` meanwhile), then
//!   releases the early workers and starts the late ones. No write to `STATE`
//!   happens before that line.
//!
//! The first lines printed are machine-readable:
//! `pid=P`, `addr STATE.hits=0x...` (one per field), and
//! `expect hits=H last_writer=H total=H table[i]=T_i ...`.

#![forbid(unsafe_code)]
use std::io::BufRead;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

/// The watched global: counters written by every worker.
///
/// `#[repr(C)]` keeps the field order and offsets stable, so the DWARF layout
/// matches the C targets' style (`STATE.hits` at offset 0).
#[repr(C)]
pub struct Stats {
    /// Incremented once per round by [`record_hit`].
    pub hits: AtomicU64,
    /// The id of the last worker that ran [`note_writer`].
    pub last_writer: AtomicU32,
    /// Padding that no one writes, so `last_writer` has a quiet neighbour.
    pub flags: AtomicU32,
    /// `table[round % 8]` is incremented once per round by [`bump_table`].
    pub table: [AtomicU64; 8],
    /// Sum of worker ids; written once per round by [`record_hit`].
    pub total: AtomicU64,
}

/// The one global the README demo watches: `hwbreak watch STATE.hits -- hwbreak-demo`.
#[used]
pub static STATE: Stats = Stats {
    hits: AtomicU64::new(0),
    last_writer: AtomicU32::new(0),
    flags: AtomicU32::new(0),
    table: [const { AtomicU64::new(0) }; 8],
    total: AtomicU64::new(0),
};

/// A second global, a plain integer, for the simplest possible watch.
#[used]
pub static ROUNDS_DONE: AtomicU64 = AtomicU64::new(0);

/// One round's first write: `STATE.hits += 1`, then `STATE.total += id`.
#[inline(never)]
pub fn record_hit(id: u32) {
    STATE.hits.fetch_add(1, Ordering::Relaxed);
    STATE.total.fetch_add(u64::from(id), Ordering::Relaxed);
}

/// One round's second write: `STATE.last_writer = id`.
#[inline(never)]
pub fn note_writer(id: u32) {
    STATE.last_writer.store(id, Ordering::Relaxed);
}

/// One round's third write: `STATE.table[round % 8] += 1`.
#[inline(never)]
pub fn bump_table(round: u64) {
    STATE.table[(round % 8) as usize].fetch_add(1, Ordering::Relaxed);
}

/// One worker: `iterations` rounds, each calling the three writers.
#[inline(never)]
fn worker(id: u32, iterations: u64, delay: Duration, gate: Option<Arc<Barrier>>) {
    if let Some(gate) = gate {
        gate.wait();
    }
    for round in 0..iterations {
        record_hit(id);
        note_writer(id);
        bump_table(round);
        ROUNDS_DONE.fetch_add(1, Ordering::Relaxed);
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
    }
}

/// Command-line options; see the crate docs.
struct Opts {
    iterations: u64,
    delay_ms: u64,
    early: u32,
    late: u32,
    late_after_ms: u64,
    wait: bool,
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        iterations: 20,
        delay_ms: 100,
        early: 2,
        late: 2,
        late_after_ms: 500,
        wait: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--wait" {
            o.wait = true;
            continue;
        }
        if a == "-h" || a == "--help" {
            return Err(String::new());
        }
        let slot = match a.as_str() {
            "--iterations" => &mut o.iterations,
            "--delay-ms" => &mut o.delay_ms,
            "--late-after-ms" => &mut o.late_after_ms,
            "--early" | "--late" => {
                let v = args.next().ok_or(format!("{a} needs a number"))?;
                let n: u32 = v
                    .parse()
                    .map_err(|_| format!("{a}: '{v}' is not a number"))?;
                if a == "--early" {
                    o.early = n
                } else {
                    o.late = n
                }
                continue;
            }
            _ => return Err(format!("unknown argument '{a}'")),
        };
        let v = args.next().ok_or(format!("{a} needs a number"))?;
        *slot = v
            .parse()
            .map_err(|_| format!("{a}: '{v}' is not a number"))?;
    }
    Ok(o)
}

const USAGE: &str = "usage: hwbreak-demo [--iterations N] [--delay-ms D] [--early E] [--late L] [--late-after-ms T] [--wait]";

fn main() {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("hwbreak-demo: {e}");
            }
            eprintln!("{USAGE}");
            std::process::exit(if e.is_empty() { 0 } else { 2 });
        }
    };
    let workers = u64::from(o.early + o.late);
    let rounds = workers * o.iterations;
    println!("pid={}", std::process::id());
    println!("addr STATE={:p}", &STATE);
    println!("addr STATE.hits={:p}", &STATE.hits);
    println!("addr STATE.last_writer={:p}", &STATE.last_writer);
    println!("addr STATE.table={:p}", &STATE.table);
    println!("addr STATE.total={:p}", &STATE.total);
    println!("addr ROUNDS_DONE={:p}", &ROUNDS_DONE);
    println!("addr fn record_hit={:p}", record_hit as fn(u32));
    let mut expect = format!("expect hits={rounds} last_writer={rounds} total={rounds}");
    for i in 0..8u64 {
        // Rounds r with r % 8 == i, per worker, times workers.
        let per_worker = (o.iterations + 7 - i) / 8;
        expect.push_str(&format!(" table[{i}]={}", per_worker * workers));
    }
    println!("{expect}");

    let delay = Duration::from_millis(o.delay_ms);
    // The gate holds the early workers until `--wait`'s line arrives.
    let gate = o.wait.then(|| Arc::new(Barrier::new(o.early as usize + 1)));
    let mut handles = Vec::new();
    for id in 1..=o.early {
        let g = gate.clone();
        let h = std::thread::Builder::new()
            .name(format!("early-{id}"))
            .spawn(move || worker(id, o.iterations, delay, g))
            .expect("spawn early worker");
        handles.push(h);
    }
    if let Some(gate) = gate {
        println!("ready");
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        gate.wait();
    } else if o.late > 0 {
        std::thread::sleep(Duration::from_millis(o.late_after_ms));
    }
    for id in o.early + 1..=o.early + o.late {
        let h = std::thread::Builder::new()
            .name(format!("late-{id}"))
            .spawn(move || worker(id, o.iterations, delay, None))
            .expect("spawn late worker");
        handles.push(h);
    }
    for h in handles {
        h.join().expect("worker panicked");
    }
    let hits = STATE.hits.load(Ordering::Relaxed);
    println!(
        "done hits={hits} rounds={}",
        ROUNDS_DONE.load(Ordering::Relaxed)
    );
}
