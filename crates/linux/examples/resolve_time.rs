//! Time to resolve names in a running process, cold and warm: the figure
//! docs/PERFORMANCE.md gives beside gdb's `info address`.
//!
//! `cargo run --release -p hwbreak-linux --example resolve_time -- PID NAME...`
//!
//! Prints, in milliseconds: reading the process's maps and executable
//! (`Resolver::for_pid`), the first resolve (which parses and indexes the
//! DWARF, from the separate debug file when the binary is stripped), and
//! each resolve after it (the index is built).

use std::time::Instant;

use hwbreak_linux::symbols::Resolver;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(pid) = args.next().and_then(|p| p.parse::<i32>().ok()) else {
        eprintln!("usage: resolve_time PID NAME...");
        std::process::exit(2);
    };
    let names: Vec<String> = args.collect();
    let t = Instant::now();
    let r = match Resolver::for_pid(pid) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("resolve_time: {e}");
            std::process::exit(1);
        }
    };
    println!("open {:10.3} ms", t.elapsed().as_secs_f64() * 1e3);
    for label in ["cold", "warm"] {
        for n in &names {
            let t = Instant::now();
            let res = r.resolve(n);
            let ms = t.elapsed().as_secs_f64() * 1e3;
            match res {
                Ok(x) => println!("{label} {ms:10.3} ms  {n} = {:#x}", x.addr),
                Err(e) => println!("{label} {ms:10.3} ms  {n}: {e}"),
            }
        }
    }
}
