//! `--branches`: hardware branch tracing, which this version of hwbreak does
//! not read on Linux. The flag exists so that asking for it gets a plain
//! answer instead of silence: what the machine has (read from
//! `/sys/bus/event_source/devices`), what tracing branches would need, and
//! where hwbreak's own Branch Trace Store support runs today (the simulator,
//! `hwbreak_core::ds`).

use std::path::Path;

use crate::error::CliError;

/// Where Linux lists the machine's PMUs.
pub const DEVICES: &str = "/sys/bus/event_source/devices";

/// The PMUs that can trace branches, as perf names them under
/// `/sys/bus/event_source/devices`, and what each is.
const BRANCH_PMUS: [(&str, &str); 2] = [
    ("intel_bts", "Branch Trace Store"),
    ("intel_pt", "Processor Trace"),
];

/// What the machine under `devices` (normally
/// `/sys/bus/event_source/devices`) offers for branch tracing, as one
/// sentence.
pub fn what_the_machine_has(devices: &Path) -> String {
    let mut have = Vec::new();
    for (pmu, what) in BRANCH_PMUS {
        if devices.join(pmu).exists() {
            have.push(format!("{pmu} ({what})"));
        }
    }
    // The core PMU advertises its LBR depth in caps/branches.
    let lbr = std::fs::read_to_string(devices.join("cpu/caps/branches"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|&n| n > 0);
    if let Some(n) = lbr {
        have.push(format!("LBR ({n} entries)"));
    }
    if have.is_empty() {
        let cpu = if devices.join("cpu").exists() {
            "its cpu PMU has no LBR"
        } else {
            "it has no cpu PMU at all, as in a VM without a virtual PMU"
        };
        format!(
            "this machine has none of intel_bts, intel_pt or LBR in {} ({cpu})",
            devices.display()
        )
    } else {
        format!("this machine has {}", have.join(", "))
    }
}

/// The refusal for `--branches`.
pub fn refuse(devices: &Path) -> CliError {
    CliError::new(format!(
        "--branches: hardware branch tracing needs a CPU PMU with intel_bts, intel_pt or LBR, and hwbreak does not read hardware branch traces on Linux yet; {}. \
         hwbreak's Branch Trace Store support runs on its simulator (`cargo test -p hwbreak-sim --test bts`); for a real trace on a machine that has one, use `perf record -e intel_pt//` or `perf record -b`",
        what_the_machine_has(devices)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_devices_directory_says_there_is_no_pmu_at_all() {
        let d = tempfile::tempdir().unwrap();
        let s = what_the_machine_has(d.path());
        assert!(s.contains("none of intel_bts, intel_pt or LBR"), "{s}");
        assert!(s.contains("no cpu PMU at all"), "{s}");
    }

    #[test]
    fn present_pmus_and_the_lbr_depth_are_named() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("intel_pt")).unwrap();
        std::fs::create_dir_all(d.path().join("cpu/caps")).unwrap();
        std::fs::write(d.path().join("cpu/caps/branches"), "32\n").unwrap();
        let s = what_the_machine_has(d.path());
        assert_eq!(
            s,
            "this machine has intel_pt (Processor Trace), LBR (32 entries)"
        );
        let e = refuse(d.path()).to_string();
        assert!(e.contains("does not read hardware branch traces"), "{e}");
    }

    #[test]
    fn a_cpu_pmu_without_lbr_is_told_apart_from_no_pmu() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("cpu")).unwrap();
        assert!(what_the_machine_has(d.path()).contains("its cpu PMU has no LBR"));
    }
}
