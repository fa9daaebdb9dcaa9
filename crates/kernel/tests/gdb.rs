
/// One remote-protocol packet `$data#cs`.
fn packet(data: &str) -> Vec<u8> {
    let sum = data.bytes().fold(0u8, |a, b| a.wrapping_add(b));
    format!("${data}#{sum:02x}").into_bytes()
}

/// Read the next packet's data (skipping acks), and ack it.
fn read_packet(s: &mut std::os::unix::net::UnixStream) -> String {
    use std::io::{Read, Write};
    let mut byte = [0u8; 1];
    let mut data = Vec::new();
    loop {
        s.read_exact(&mut byte).expect("read from the stub");
        if byte[0] == b'$' {
            break;
        }
    }
    loop {
        s.read_exact(&mut byte).expect("read from the stub");
        if byte[0] == b'#' {
            break;
        }
        data.push(byte[0]);
    }
    let mut cs = [0u8; 2];
    s.read_exact(&mut cs).expect("read the checksum");
    s.write_all(b"+").unwrap();
    String::from_utf8_lossy(&data).to_string()
}

/// Ctrl-C (a raw 0x03 byte while the target runs) stops every CPU and is
/// reported as SIGINT; after detaching the kernel runs on to the end.
#[test]
fn ctrl_c_from_the_debugger_stops_the_running_kernel_with_sigint() {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    if !have_qemu() {
        return;
    }
    let image = image().unwrap_or_else(|e| panic!("{e}"));
    let dir = std::env::temp_dir().join(format!("hwbreak-kgdb-{}-ctrlc", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("com2.sock");
    let _ = std::fs::remove_file(&sock);
    let mut qemu = qemu_command(&image, 2, "gdb=1 cases=gdb_ctrl_c");
    qemu.args(["-serial", &format!("unix:{},server=on,wait=off", sock.display())])
        .stdout(Stdio::piped());
    let child = qemu.spawn().expect("run qemu-system-x86_64");
    while !sock.exists() {
        std::thread::yield_now();
    }
    let mut s = UnixStream::connect(&sock).expect("connect to COM2");
    s.write_all(&packet("?")).unwrap();
    let boot_stop = read_packet(&mut s);
    assert!(boot_stop.starts_with("T05"), "boot stop: {boot_stop}");
    s.write_all(&packet("c")).unwrap();
    s.write_all(&[0x03]).unwrap();
    let stop = read_packet(&mut s);
    s.write_all(&packet("D")).unwrap();
    let detach = read_packet(&mut s);
    drop(s);
    let q = child.wait_with_output().expect("wait for qemu");
    let _ = std::fs::remove_dir_all(&dir);
    let boot = Boot {
        log: String::from_utf8_lossy(&q.stdout).replace('\r', ""),
        code: q.status.code().filter(|c| c & 1 == 1).map(|c| c >> 1),
    };
    assert!(stop.starts_with("T02"), "stop after Ctrl-C: {stop}; log:\n{}", boot.log);
    assert_eq!(detach, "OK");
    boot.assert_passed(&["gdb_ctrl_c"]);
}
