//! The main job until the CLI exists: a wide breakpoint scenario on the
//! simulated SMP machine.
//!
//! ```text
//! cargo run --release --example wide -p hwbreak-sim -- [--arch x86|arm64|power] [--cpus N] [--seed S]
//! ```
//!
//! Boots N CPUs, registers a **wide** write watchpoint on a shared counter
//! (every online CPU, all-or-nothing) and a **per-task** watchpoint on a log
//! head that only one task's accesses should hit, runs several tasks on all
//! CPUs under the seeded scheduler, takes a CPU offline and back online (the
//! wide breakpoint follows it), and prints every hit and a summary checked
//! against the accesses that really happened. Then an arm64 run shows the
//! step-over protocol of trap-before hardware, exception by exception.

use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use hwbreak_core::events::Record;
use hwbreak_core::{Access, BpAttr, BpId, CpuId, Target, TaskId};
use hwbreak_sim::hw::{PowerHw, PowerMode};
use hwbreak_sim::{BpOpts, Program, Sim, TraceEvent};

/// The shared counter every task increments (8 bytes).
const COUNTER: u64 = 0x60_1000;
/// A log head (4 bytes); only one task's accesses are watched.
const LOG_HEAD: u64 = 0x60_2000;
/// Its neighbour in the same doubleword: POWER's widened range sees it, the
/// layer must filter those traps as strays.
const LOG_TAIL: u64 = 0x60_2004;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ArchArg {
    X86,
    Arm64,
    Power,
}

#[derive(Parser, Debug)]
#[command(about = "Wide hardware breakpoints on a simulated SMP machine")]
struct Args {
    /// Which hardware to simulate (POWER runs as POWER10: two DAWRs).
    #[arg(long, value_enum, default_value = "x86")]
    arch: ArchArg,
    /// CPUs (1 to 4096).
    #[arg(long, default_value_t = 8)]
    cpus: usize,
    /// Scheduler seed: the same seed gives the same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Loop iterations per task.
    #[arg(long, default_value_t = 3)]
    loops: usize,
    /// Print only the summary, not every hit.
    #[arg(long)]
    quiet: bool,
}

fn build(arch: ArchArg, cpus: usize, seed: u64) -> Result<Sim, hwbreak_sim::SimError> {
    match arch {
        ArchArg::X86 => Sim::x86(cpus, seed),
        ArchArg::Arm64 => Sim::arm64(cpus, seed),
        ArchArg::Power => Sim::power_with(
            PowerHw {
                mode: PowerMode::Dawr {
                    slots: 2,
                    power10: true,
                },
            },
            cpus,
            seed,
        ),
    }
}

/// Event-buffer totals, drained as the run goes so rings never overflow.
#[derive(Default)]
struct Events {
    samples: u64,
    switches: u64,
    lost: u64,
}

fn drain(sim: &Sim, ev: &mut Events) {
    sim.layer.drain_events(&mut |_, r| match r {
        Record::Sample(_) => ev.samples += 1,
        Record::Switch { .. } => ev.switches += 1,
        Record::Lost { count } => ev.lost += count,
        Record::Branch { .. } => {}
    });
}

/// Run `ticks` scheduler ticks in chunks, draining the event rings between.
fn run(sim: &mut Sim, ticks: u64, ev: &mut Events) -> Result<(), hwbreak_sim::SimError> {
    let mut left = ticks;
    while left > 0 {
        let n = left.min(16);
        sim.run(n)?;
        drain(sim, ev);
        left -= n;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match wide(&args).and_then(|ok| Ok(ok && step_over_demo(args.seed, args.quiet)?)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("FAILED: a check did not hold (see above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn wide(args: &Args) -> Result<bool, Box<dyn std::error::Error>> {
    let mut sim = build(args.arch, args.cpus, args.seed)?;
    println!(
        "== {} machine: {} CPUs, {} data slots per CPU, seed {}",
        sim.hw.hw().name(),
        args.cpus,
        sim.hw.hw().slots(hwbreak_core::arch::Pool::Data),
        args.seed
    );

    // Tasks: more than CPUs, so the scheduler has to switch.
    let mut body = Program::new();
    for _ in 0..args.loops {
        body = body
            .read(COUNTER, 8)
            .write(COUNTER, 8)
            .write(LOG_HEAD, 4)
            .write(LOG_TAIL, 4)
            .nop()
            .yield_now();
    }
    let ntasks = args.cpus + args.cpus / 2 + 1;
    let tasks: Vec<TaskId> = (0..ntasks).map(|_| sim.spawn(body.clone())).collect();
    let watched_task = tasks[1];

    let wide = sim.register_with(
        BpAttr::write(COUNTER, 8),
        Target::AllCpus,
        BpOpts {
            cookie: 1,
            ..Default::default()
        },
    )?;
    let mine = sim.register_with(
        BpAttr::read_write(LOG_HEAD, 4),
        Target::Task(watched_task),
        BpOpts {
            cookie: 2,
            ..Default::default()
        },
    )?;
    println!(
        "registered bp {} = wide write watch on counter {COUNTER:#x}+8 (all CPUs)",
        wide.0
    );
    println!(
        "registered bp {} = rw watch on log head {LOG_HEAD:#x}+4 for task {} only",
        mine.0, watched_task.0
    );

    let mut ev = Events::default();
    let mut ok = true;
    run(&mut sim, (ntasks * args.loops) as u64 * 2, &mut ev)?;

    if args.cpus > 1 {
        let off = CpuId((args.cpus / 2) as u32);
        sim.cpu_down(off)?;
        let left = sim.hw.cpu(off).map(|c| c.armed_at_offline()).unwrap_or(0);
        println!(
            "-- CPU {} offline: {left} slot(s) left armed there (expect 0)",
            off.0
        );
        ok &= left == 0;
        run(&mut sim, (ntasks * args.loops) as u64 * 2, &mut ev)?;
        match sim.cpu_up(off) {
            Ok(()) => {}
            Err(e) => {
                println!("-- CPU {} online, but: {e}", off.0);
                ok = false;
            }
        }
        let follows =
            sim.hw.armed(off).iter().any(|a| {
                a.addr <= COUNTER && COUNTER < a.addr + a.len && a.access == Access::Write
            });
        println!(
            "-- CPU {} back online: wide bp {} armed there again: {}",
            off.0,
            wide.0,
            if follows { "yes" } else { "NO" }
        );
        ok &= follows;
    }
    let mut rounds = 0;
    while !sim.run_to_completion(64)? {
        drain(&sim, &mut ev);
        rounds += 1;
        if rounds > 100_000 {
            println!("tasks did not finish");
            return Ok(false);
        }
    }
    drain(&sim, &mut ev);

    let hits = sim.hits();
    if !args.quiet {
        println!(
            "\n{:>4}  {:>3}  {:>4}  {:>5}  {:>10}  {:>10}",
            "#", "bp", "cpu", "task", "ip", "addr"
        );
        for (i, h) in hits.iter().enumerate() {
            println!(
                "{:>4}  {:>3}  {:>4}  {:>5}  {:>#10x}  {:>#10x}",
                i + 1,
                h.bp.0,
                h.cpu.0,
                h.task
                    .map(|t| t.0.to_string())
                    .unwrap_or_else(|| "-".into()),
                h.ip,
                h.addr
            );
        }
    }

    // Check against what really happened.
    let performed = sim.performed();
    let counter_writes = performed
        .iter()
        .filter(|p| p.access.kind == Access::Write && p.access.overlaps(COUNTER, 8))
        .count();
    let head_by_watched = performed
        .iter()
        .filter(|p| p.task == Some(watched_task) && p.access.overlaps(LOG_HEAD, 4))
        .count();
    let count = |id: BpId| hits.iter().filter(|h| h.bp == id).count();
    let stats = sim.stats();
    println!("\n== summary");
    println!("instructions            {}", stats.insns);
    println!("context switches        {}", stats.switches);
    println!(
        "debug exceptions        {} ({} single-step completions)",
        stats.traps, stats.step_traps
    );
    println!(
        "bp {} (wide, counter)    {} hits  = {} writes to the counter",
        wide.0,
        count(wide),
        counter_writes
    );
    println!(
        "bp {} (task {}, head)     {} hits  = {} accesses to the head by task {}",
        mine.0,
        watched_task.0,
        count(mine),
        head_by_watched,
        watched_task.0
    );
    println!("strays filtered         {}", stats.strays);
    println!(
        "event records           {} samples, {} switches, lost {}",
        ev.samples, ev.switches, ev.lost
    );
    println!("register faults         {}", sim.hw.faults().len());
    println!("late callbacks          {}", stats.late_callbacks);
    ok &= count(wide) == counter_writes
        && count(mine) == head_by_watched
        && hits
            .iter()
            .filter(|h| h.bp == mine)
            .all(|h| h.task == Some(watched_task))
        && ev.samples == hits.len() as u64
        && ev.lost == 0
        && sim.hw.faults().is_empty()
        && stats.late_callbacks == 0
        && stats.step_contract_broken == 0;
    println!(
        "checks                  {}",
        if ok { "OK" } else { "FAILED" }
    );
    Ok(ok)
}

/// arm64: trap before the access, step over, report after.
fn step_over_demo(seed: u64, _quiet: bool) -> Result<bool, Box<dyn std::error::Error>> {
    println!("\n== arm64 step-over: 2 CPUs, write watch on {COUNTER:#x}+4");
    let mut sim = Sim::arm64(2, seed)?;
    let id = sim.register(BpAttr::write(COUNTER, 4), Target::AllCpus)?;
    let t = sim.spawn(Program::new().write(COUNTER, 4).exit());
    sim.switch_to(CpuId(0), Some(t))?;
    let out = sim.access(CpuId(0), COUNTER, 4, Access::Write)?;
    for e in sim.trace() {
        match e {
            TraceEvent::Exception {
                cpu,
                raw: hwbreak_core::arch::RawStatus::Arm64 { esr, far, pc },
                dispatched,
            } => {
                let ec = esr >> 26;
                let what = match ec {
                    0x34 | 0x35 => format!(
                        "watchpoint  ESR.EC={ec:#x} WnR={} FAR={far:#x}",
                        (esr >> 6) & 1
                    ),
                    0x32 | 0x33 => format!("single-step ESR.EC={ec:#x}"),
                    _ => format!("ESR.EC={ec:#x}"),
                };
                println!(
                    "  cpu{} exception  {what} pc={pc:#x} -> layer: delivered {}, {}",
                    cpu.0,
                    dispatched.delivered,
                    if dispatched.stepping {
                        "slot disabled, single-step armed"
                    } else {
                        "slot re-armed, stepping off"
                    }
                );
            }
            TraceEvent::Access(p) => println!(
                "  cpu{} access     {:?} {:#x}+{} at pc {:#x} (performed)",
                p.cpu.0, p.access.kind, p.access.addr, p.access.len, p.ip
            ),
            _ => {}
        }
    }
    let hits = sim.hits();
    let ok = out.delivered == 1
        && out.step_traps == 1
        && sim.performed().len() == 1
        && hits.len() == 1
        && hits[0].bp == id
        && sim.hw.armed(CpuId(0)).len() == 1
        && !sim
            .hw
            .cpu(CpuId(0))
            .map(|c| c.flags().single_step)
            .unwrap_or(true);
    println!(
        "  hit reported after the store, store performed once, slot re-armed, single-step off: {}",
        if ok { "OK" } else { "FAILED" }
    );
    Ok(ok)
}
