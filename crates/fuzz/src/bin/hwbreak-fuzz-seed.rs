//! Writes every target's seeds into its corpus directory,
//! `testdata/fuzz/<target>/` (run after a change to the seeds or to a format:
//! `cargo run -p hwbreak-fuzz --bin hwbreak-fuzz-seed`).

#![forbid(unsafe_code)]

fn main() -> std::io::Result<()> {
    for (name, _) in hwbreak_fuzz::TARGETS {
        let dir = hwbreak_fuzz::corpus_dir(name);
        std::fs::create_dir_all(&dir)?;
        let seeds = hwbreak_fuzz::seeds(name);
        for s in &seeds {
            std::fs::write(dir.join(format!("seed-{}", hwbreak_fuzz::input_name(s))), s)?;
        }
        println!("{name}: {} seeds in {}", seeds.len(), dir.display());
    }
    Ok(())
}
