//! `--branches` says plainly that hardware branch tracing needs hardware
//! (and reading) this machine lacks, naming what `/sys` shows, before
//! anything is launched or watched.
mod common;
use common::*;
use hwbreak::branches::{what_the_machine_has, DEVICES};
use std::path::Path;

#[test]
fn watch_and_record_with_branches_refuse_and_say_what_the_machine_has() {
    let has = what_the_machine_has(Path::new(DEVICES));
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let out_file = dir.path().join("rec.hwb");
    for args in [
        vec!["watch", "--branches", "counter", "--", "touch"],
        vec![
            "record",
            "-o",
            out_file.to_str().unwrap(),
            "--branches",
            "counter",
            "--",
            "touch",
        ],
    ] {
        let mut cmd = hwbreak();
        cmd.args(&args).arg(&marker);
        let o = run(&mut cmd);
        assert_eq!(o.code, 1, "{args:?}: {}", o.stderr);
        assert!(o.stdout.is_empty(), "{args:?} printed {:?}", o.stdout);
        let line = o.stderr.trim();
        assert_eq!(line.lines().count(), 1, "one line: {line}");
        assert!(
            line.contains(
                "hardware branch tracing needs a CPU PMU with intel_bts, intel_pt or LBR"
            ),
            "{line}"
        );
        assert!(line.contains(&has), "{line} lacks {has:?}");
        assert!(!marker.exists(), "{args:?} launched the command");
        assert!(!out_file.exists(), "{args:?} wrote a record file");
    }
    println!("this machine: {has}");
}
