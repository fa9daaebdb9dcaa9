//! The layer on QEMU's real (TCG-emulated) debug registers: boot, exact hit
//! counts per slot, remote registration through IPIs, wide breakpoints.

mod common;

use common::{boot, run_cases};

#[test]
fn boots_and_brings_every_cpu_online_for_1_to_8_cpus() {
    for n in 1..=8 {
        let Some(b) = boot(n, "cases=") else { return };
        assert!(
            b.log
                .contains(&format!("hwbreak-kernel: all {n} CPUs online")),
            "{n} CPUs; log:\n{}",
            b.log
        );
        assert!(b.log.contains("DONE passed=0 failed=0"), "log:\n{}", b.log);
        assert_eq!(b.code, Some(0), "log:\n{}", b.log);
    }
}

#[test]
fn write_read_write_and_execute_breakpoints_hit_exactly_n_times() {
    run_cases(
        1,
        &["write_exact", "rw_exact", "exec_exact", "single_step_traps"],
    );
}

#[test]
fn four_slots_at_once_are_counted_exactly_per_slot_and_a_fifth_is_refused_without_trace() {
    run_cases(1, &["four_slots_exact", "fifth_refused_no_trace"]);
}

#[test]
fn four_slots_registered_from_cpu0_hit_exactly_on_each_of_4_cpus() {
    run_cases(4, &["four_slots_every_cpu"]);
}

#[test]
fn wide_breakpoint_hits_on_each_of_8_cpus_and_an_unfit_one_leaves_no_trace() {
    run_cases(8, &["wide_hits_every_cpu", "wide_unfit_no_trace"]);
}

/// QEMU 7.2 TCG keeps a stale "hit" flag on a watchpoint after a lower slot
/// hits, so DR6 reports the higher slot too. With the workaround off
/// (`dr6fix=0`) the per-slot exact count must catch it; a QEMU without the
/// bug passes either way, which is reported, not failed.
#[test]
fn per_slot_count_catches_qemus_stale_dr6_bits_without_the_workaround() {
    let Some(b) = boot(1, "dr6fix=0 cases=four_slots_exact") else {
        return;
    };
    if b.log.contains("PASS four_slots_exact") {
        println!("NOTE: this QEMU reports no stale DR6 bits; nothing to catch");
        return;
    }
    let fail = b.lines("FAIL four_slots_exact");
    assert!(
        fail.iter().any(|l| l.contains("stale DR6")),
        "log:\n{}",
        b.log
    );
    assert_eq!(b.code, Some(1), "log:\n{}", b.log);
}

#[test]
fn an_unknown_case_name_fails_with_exit_code_1() {
    let Some(b) = boot(1, "cases=no_such_case") else {
        return;
    };
    assert!(
        b.log.contains("FAIL no_such_case: no such case"),
        "log:\n{}",
        b.log
    );
    assert_eq!(b.code, Some(1), "log:\n{}", b.log);
}

#[test]
fn per_task_breakpoint_fires_only_in_its_task_while_it_migrates_over_4_cpus_and_exit_releases_it() {
    run_cases(4, &["task_bp_follows_its_task_across_migration"]);
}

#[test]
fn wide_breakpoint_follows_a_cpu_offline_and_online_and_an_unfit_one_is_reported() {
    let Some(b) = run_cases(
        4,
        &[
            "hotplug_wide_follows_offline_online",
            "hotplug_unfit_wide_is_reported",
        ],
    ) else {
        return;
    };
    assert!(
        b.log
            .lines()
            .any(|l| l.starts_with("cpu3 online: wide breakpoint")
                && l.contains("does not fit there: no free Data slot on CPU 3")),
        "the unfit CPU is not reported; log:\n{}",
        b.log
    );
}

/// At least 10^5 random operations (register, unregister, modify,
/// enable/disable, hits, switches and migration, offline/online, debugger
/// sessions) on 4 CPUs: no CPU over its slots, no hit from an unregistered
/// or half-registered breakpoint, no callback after unregister returns, and
/// nothing left booked or programmed at the end.
#[test]
fn stress_of_100k_random_operations_across_4_cpus_keeps_the_three_invariants() {
    let Some(b) = run_cases(4, &["stress"]) else {
        return;
    };
    let line = b.lines("  stress:");
    assert_eq!(line.len(), 1, "log:\n{}", b.log);
    println!("{}", line[0].trim());
}

/// Linux's nine KUnit cases (`kernel/events/hw_breakpoint_test.c`) inside the
/// kernel, against the layer on the real registers, `current` a running task.
#[test]
fn kunit_hw_breakpoint_test_nine_cases_pass_in_the_kernel_on_real_registers() {
    let Some(b) = run_cases(2, &["kunit"]) else {
        return;
    };
    assert_eq!(b.lines("  kunit test_").len(), 9, "log:\n{}", b.log);
}
