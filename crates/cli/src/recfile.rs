//! The `hwbreak record` file: a compact, versioned binary log of hits.
//!
//! All integers are little-endian. The file is, in order:
//!
//! ```text
//! header      32 bytes
//!   0  magic      8   b"HWBRKREC"
//!   8  version    u16 = 1
//!   10 hit_size   u16 = 48   size of a hit record's fixed part
//!   12 flags      u32        bit 0: values were recorded
//!   16 pid        u32        the target process (0: CPU-wide or unknown)
//!   20 reserved   u32 = 0
//!   24 start_ns   u64        perf clock (CLOCK_MONOTONIC) when recording began
//! watch table
//!   count u32 (≤ 256), then per watch:
//!   addr u64, len u64, access u8 (0 r, 1 w, 2 rw, 3 x), reserved u8,
//!   name_len u16, name (UTF-8)
//! module map (what `report` needs to symbolize offline)
//!   count u32 (≤ 65536), then per mapping:
//!   start u64, end u64, file_offset u64, path_len u16, path (UTF-8)
//! records, until the trailer; each starts with a kind byte
//!   hit     kind 1, 48 bytes then nframes × u64 (return addresses, innermost first;
//!           a last frame of `frames::CUT` marks a stack cut at the copied bytes)
//!     0 kind u8  1 flags u8 (bit 0: value valid)  2 watch u16  4 tid u32
//!     8 time_ns u64  16 ip u64  24 addr u64  32 value u64  40 cpu u32
//!     44 nframes u16 (≤ 4096)  46 reserved u16
//!   lost    kind 2, 16 bytes: kind u8, 7 zero bytes, count u64
//!   module  kind 3, 32 bytes then the path: kind u8, 1 zero byte,
//!           path_len u16, 4 zero bytes, start u64, end u64, file_offset u64;
//!           a mapping seen after the header (a library loaded later)
//!   trailer kind 0xFF, 24 bytes: kind u8, 7 zero bytes, hits u64, lost u64;
//!           must be the last bytes of the file
//! ```
//!
//! A file without its trailer was cut short (the recorder was killed): the
//! reader says so instead of guessing.
//!
//! A hit is written from, and read back as, the one hit record of
//! [`hwbreak_core::events`]: an [`Extended`] whose `sample.bp` is the
//! watch's index in the table, `sample.task` the thread, `ext.stack` the
//! return addresses, `ext.stack_truncated` the cut marker and `ext.value`
//! the value.

use hwbreak_core::events::{Extended, Extension, Sample};
use hwbreak_core::{Access, BpId, CpuId, TaskId};
use std::io::{self, BufRead, Read, Write};

/// The file's magic bytes.
pub const MAGIC: &[u8; 8] = b"HWBRKREC";
/// The format version this code writes and reads.
pub const VERSION: u16 = 1;
/// Size of a hit record's fixed part.
pub const HIT_SIZE: usize = 48;
const KIND_HIT: u8 = 1;
const KIND_LOST: u8 = 2;
const KIND_MODULE: u8 = 3;
const KIND_END: u8 = 0xFF;
const MAX_WATCHES: u32 = 256;
const MAX_MODULES: u32 = 65536;
/// Longest callchain a record may carry.
pub const MAX_FRAMES: usize = 4096;

/// One watch, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEntry {
    /// The SPEC or resolved name, as shown to the user.
    pub name: String,
    /// First byte watched.
    pub addr: u64,
    /// Bytes watched.
    pub len: u64,
    /// The access watched.
    pub access: Access,
}

/// One executable mapping of the target, for offline symbolization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// First address of the mapping.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// File offset that `start` maps.
    pub file_offset: u64,
    /// Path of the mapped file.
    pub path: String,
}

/// Everything before the records.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    /// Values were recorded (`--values`).
    pub values: bool,
    /// The target process, or 0.
    pub pid: u32,
    /// Perf clock at the start.
    pub start_ns: u64,
    /// The watches; a hit's `watch` indexes this.
    pub watches: Vec<WatchEntry>,
    /// The target's executable mappings.
    pub modules: Vec<Module>,
}

/// The totals at the end of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Trailer {
    /// Hit records written.
    pub hits: u64,
    /// Samples the kernel dropped (sum of lost records).
    pub lost: u64,
}

/// Why a record file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RecError {
    /// The OS refused.
    #[error("cannot read the record file: {0}")]
    Io(#[from] io::Error),
    /// Not a record file.
    #[error("not an hwbreak record file (the magic bytes are wrong); make one with `hwbreak record -o FILE`")]
    BadMagic,
    /// A different format version.
    #[error("record file version {0} is not supported (this hwbreak reads version {VERSION}); report it with the hwbreak that recorded it")]
    Version(u16),
    /// The file ends early.
    #[error("the record file is truncated at byte {offset} (in {what}): the recording did not finish; record again and stop it with Ctrl-C rather than killing it")]
    Truncated {
        /// Where the data ran out.
        offset: u64,
        /// What was being read.
        what: &'static str,
    },
    /// The bytes make no sense.
    #[error("the record file is corrupt at byte {offset}: {what}")]
    Corrupt {
        /// Where.
        offset: u64,
        /// What is wrong.
        what: String,
    },
}

fn access_code(a: Access) -> u8 {
    match a {
        Access::Read => 0,
        Access::Write => 1,
        Access::ReadWrite => 2,
        Access::Execute => 3,
    }
}

fn access_from(c: u8) -> Option<Access> {
    Some(match c {
        0 => Access::Read,
        1 => Access::Write,
        2 => Access::ReadWrite,
        3 => Access::Execute,
        _ => return None,
    })
}

/// Writes a record file. Call [`Writer::finish`] to write the trailer.
pub struct Writer<W: Write> {
    out: W,
    hits: u64,
    lost: u64,
}

fn put_str(v: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    let n = b.len().min(u16::MAX as usize);
    v.extend_from_slice(&(n as u16).to_le_bytes());
    v.extend_from_slice(&b[..n]);
}

impl<W: Write> Writer<W> {
    /// Write the header, watch table and module map.
    pub fn new(mut out: W, h: &Header) -> io::Result<Self> {
        let mut v = Vec::with_capacity(256);
        v.extend_from_slice(MAGIC);
        v.extend_from_slice(&VERSION.to_le_bytes());
        v.extend_from_slice(&(HIT_SIZE as u16).to_le_bytes());
        v.extend_from_slice(&u32::from(h.values).to_le_bytes());
        v.extend_from_slice(&h.pid.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&h.start_ns.to_le_bytes());
        v.extend_from_slice(&(h.watches.len() as u32).to_le_bytes());
        for w in &h.watches {
            v.extend_from_slice(&w.addr.to_le_bytes());
            v.extend_from_slice(&w.len.to_le_bytes());
            v.push(access_code(w.access));
            v.push(0);
            put_str(&mut v, &w.name);
        }
        v.extend_from_slice(&(h.modules.len() as u32).to_le_bytes());
        for m in &h.modules {
            v.extend_from_slice(&m.start.to_le_bytes());
            v.extend_from_slice(&m.end.to_le_bytes());
            v.extend_from_slice(&m.file_offset.to_le_bytes());
            put_str(&mut v, &m.path);
        }
        out.write_all(&v)?;
        Ok(Writer {
            out,
            hits: 0,
            lost: 0,
        })
    }

    /// Append one hit: `h.sample.bp` is its watch's index in the table. A
    /// cut stack (`ext.stack_truncated`) ends with [`crate::frames::CUT`].
    /// Stacks longer than [`MAX_FRAMES`] are cut.
    pub fn hit(&mut self, h: &Extended<'_>) -> io::Result<()> {
        let (s, e) = (&h.sample, &h.ext);
        let n = (e.stack.len() + usize::from(e.stack_truncated)).min(MAX_FRAMES);
        let mut b = [0u8; HIT_SIZE];
        b[0] = KIND_HIT;
        b[1] = u8::from(e.value.is_some());
        b[2..4].copy_from_slice(&(s.bp.0 as u16).to_le_bytes());
        b[4..8].copy_from_slice(&h.tid().to_le_bytes());
        b[8..16].copy_from_slice(&s.time.to_le_bytes());
        b[16..24].copy_from_slice(&s.ip.to_le_bytes());
        b[24..32].copy_from_slice(&s.addr.to_le_bytes());
        b[32..40].copy_from_slice(&e.value.unwrap_or(0).to_le_bytes());
        b[40..44].copy_from_slice(&s.cpu.0.to_le_bytes());
        b[44..46].copy_from_slice(&(n as u16).to_le_bytes());
        self.out.write_all(&b)?;
        let cut = [crate::frames::CUT];
        let frames = e
            .stack
            .iter()
            .chain(if e.stack_truncated { &cut[..] } else { &[] });
        for f in frames.take(n) {
            self.out.write_all(&f.to_le_bytes())?;
        }
        self.hits += 1;
        Ok(())
    }

    /// Append a lost-samples record.
    pub fn lost(&mut self, count: u64) -> io::Result<()> {
        if count == 0 {
            return Ok(());
        }
        let mut b = [0u8; 16];
        b[0] = KIND_LOST;
        b[8..16].copy_from_slice(&count.to_le_bytes());
        self.lost += count;
        self.out.write_all(&b)
    }

    /// Append a mapping seen after the header (a library loaded later).
    pub fn module(&mut self, m: &Module) -> io::Result<()> {
        let p = m.path.as_bytes();
        let n = p.len().min(u16::MAX as usize);
        let mut b = [0u8; 32];
        b[0] = KIND_MODULE;
        b[2..4].copy_from_slice(&(n as u16).to_le_bytes());
        b[8..16].copy_from_slice(&m.start.to_le_bytes());
        b[16..24].copy_from_slice(&m.end.to_le_bytes());
        b[24..32].copy_from_slice(&m.file_offset.to_le_bytes());
        self.out.write_all(&b)?;
        self.out.write_all(&p[..n])
    }

    /// Write the trailer and flush; returns the totals and the inner writer.
    pub fn finish(mut self) -> io::Result<(Trailer, W)> {
        let mut b = [0u8; 24];
        b[0] = KIND_END;
        b[8..16].copy_from_slice(&self.hits.to_le_bytes());
        b[16..24].copy_from_slice(&self.lost.to_le_bytes());
        self.out.write_all(&b)?;
        self.out.flush()?;
        Ok((
            Trailer {
                hits: self.hits,
                lost: self.lost,
            },
            self.out,
        ))
    }
}

/// Reads a record file front to back.
pub struct Reader<R: BufRead> {
    inp: R,
    offset: u64,
    /// The header, watch table and module map.
    pub header: Header,
    hits_seen: u64,
    lost_seen: u64,
    done: bool,
    /// The latest hit's stack (reused from hit to hit).
    stack: Vec<u64>,
}

impl<R: BufRead> Reader<R> {
    fn exact(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), RecError> {
        let mut got = 0;
        while got < buf.len() {
            match self.inp.read(&mut buf[got..]) {
                Ok(0) => {
                    return Err(RecError::Truncated {
                        offset: self.offset + got as u64,
                        what,
                    })
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.offset += buf.len() as u64;
        Ok(())
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, RecError> {
        let mut b = [0u8; 2];
        self.exact(&mut b, what)?;
        Ok(u16::from_le_bytes(b))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, RecError> {
        let mut b = [0u8; 4];
        self.exact(&mut b, what)?;
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, RecError> {
        let mut b = [0u8; 8];
        self.exact(&mut b, what)?;
        Ok(u64::from_le_bytes(b))
    }

    fn string(&mut self, what: &'static str) -> Result<String, RecError> {
        let n = self.u16(what)? as usize;
        let at = self.offset;
        let mut b = vec![0u8; n];
        self.exact(&mut b, what)?;
        String::from_utf8(b).map_err(|_| RecError::Corrupt {
            offset: at,
            what: format!("{what} is not UTF-8"),
        })
    }

    fn corrupt<T>(&self, at: u64, what: String) -> Result<T, RecError> {
        Err(RecError::Corrupt { offset: at, what })
    }

    /// Read and check everything before the records.
    pub fn new(inp: R) -> Result<Self, RecError> {
        let mut r = Reader {
            inp,
            offset: 0,
            header: Header::default(),
            hits_seen: 0,
            lost_seen: 0,
            done: false,
            stack: Vec::new(),
        };
        let mut magic = [0u8; 8];
        let got = read_up_to(&mut r.inp, &mut magic)?;
        if got < 8 {
            if magic[..got] == MAGIC[..got] {
                return Err(RecError::Truncated {
                    offset: got as u64,
                    what: "the header",
                });
            }
            return Err(RecError::BadMagic);
        }
        r.offset = 8;
        if &magic != MAGIC {
            return Err(RecError::BadMagic);
        }
        let version = r.u16("the header")?;
        if version != VERSION {
            return Err(RecError::Version(version));
        }
        let at = r.offset;
        let hit_size = r.u16("the header")?;
        if hit_size as usize != HIT_SIZE {
            return r.corrupt(at, format!("hit size {hit_size}, expected {HIT_SIZE}"));
        }
        let flags = r.u32("the header")?;
        r.header.values = flags & 1 != 0;
        r.header.pid = r.u32("the header")?;
        let _reserved = r.u32("the header")?;
        r.header.start_ns = r.u64("the header")?;
        let at = r.offset;
        let nw = r.u32("the watch table")?;
        if nw > MAX_WATCHES {
            return r.corrupt(at, format!("{nw} watches (at most {MAX_WATCHES})"));
        }
        for _ in 0..nw {
            let addr = r.u64("the watch table")?;
            let len = r.u64("the watch table")?;
            let at = r.offset;
            let mut ab = [0u8; 2];
            r.exact(&mut ab, "the watch table")?;
            let Some(access) = access_from(ab[0]) else {
                return r.corrupt(at, format!("access code {} (0..=3 expected)", ab[0]));
            };
            let name = r.string("a watch name")?;
            r.header.watches.push(WatchEntry {
                name,
                addr,
                len,
                access,
            });
        }
        let at = r.offset;
        let nm = r.u32("the module map")?;
        if nm > MAX_MODULES {
            return r.corrupt(at, format!("{nm} modules (at most {MAX_MODULES})"));
        }
        for _ in 0..nm {
            let at = r.offset;
            let start = r.u64("the module map")?;
            let end = r.u64("the module map")?;
            let file_offset = r.u64("the module map")?;
            if end < start {
                return r.corrupt(
                    at,
                    format!("module ends ({end:#x}) before it starts ({start:#x})"),
                );
            }
            let path = r.string("a module path")?;
            r.header.modules.push(Module {
                start,
                end,
                file_offset,
                path,
            });
        }
        Ok(r)
    }

    /// The next hit, borrowing the reader's stack buffer; `Ok(None)` after
    /// the trailer. A lost record is counted and skipped.
    pub fn next_hit(&mut self) -> Result<Option<Extended<'_>>, RecError> {
        let Some(mut hit) = self.next_fixed()? else {
            return Ok(None);
        };
        let mut stack = &self.stack[..];
        if let Some((&crate::frames::CUT, rest)) = stack.split_last() {
            stack = rest;
            hit.ext.stack_truncated = true;
        }
        hit.ext.stack = stack;
        Ok(Some(hit))
    }

    /// The next hit's fixed part (its stack read into `self.stack`).
    fn next_fixed(&mut self) -> Result<Option<Extended<'static>>, RecError> {
        loop {
            if self.done {
                return Ok(None);
            }
            let at = self.offset;
            let mut kind = [0u8; 1];
            let got = read_up_to(&mut self.inp, &mut kind)?;
            if got == 0 {
                return Err(RecError::Truncated {
                    offset: at,
                    what: "the records (no trailer)",
                });
            }
            let le32 =
                |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
            self.offset += 1;
            match kind[0] {
                KIND_HIT => {
                    let mut b = [0u8; HIT_SIZE];
                    b[0] = KIND_HIT;
                    self.exact(&mut b[1..], "a hit record")?;
                    let le64 = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
                    let watch = u16::from_le_bytes([b[2], b[3]]);
                    if watch as usize >= self.header.watches.len() {
                        return self.corrupt(
                            at,
                            format!(
                                "hit for watch #{watch}, but the file has {} watches",
                                self.header.watches.len()
                            ),
                        );
                    }
                    let n = u16::from_le_bytes([b[44], b[45]]) as usize;
                    if n > MAX_FRAMES {
                        return self
                            .corrupt(at, format!("{n} stack frames (at most {MAX_FRAMES})"));
                    }
                    let hit = Extended {
                        sample: Sample {
                            bp: BpId(u32::from(watch)),
                            cpu: CpuId(le32(&b, 40)),
                            task: Some(TaskId(u64::from(le32(&b, 4)))),
                            ip: le64(16),
                            addr: le64(24),
                            time: le64(8),
                        },
                        ext: Extension {
                            value: (b[1] & 1 != 0).then(|| le64(32)),
                            ..Extension::NONE
                        },
                    };
                    self.stack.clear();
                    let mut fb = [0u8; 8 * 64];
                    let mut left = n;
                    while left > 0 {
                        let k = left.min(64);
                        self.exact(&mut fb[..8 * k], "a hit's stack")?;
                        self.stack.extend(
                            fb[..8 * k]
                                .chunks_exact(8)
                                .map(|c| u64::from_le_bytes(c.try_into().unwrap())),
                        );
                        left -= k;
                    }
                    self.hits_seen += 1;
                    return Ok(Some(hit));
                }
                KIND_LOST => {
                    let mut pad = [0u8; 7];
                    self.exact(&mut pad, "a lost record")?;
                    let c = self.u64("a lost record")?;
                    self.lost_seen = self.lost_seen.saturating_add(c);
                }
                KIND_MODULE => {
                    let mut b = [0u8; 32];
                    b[0] = KIND_MODULE;
                    self.exact(&mut b[1..], "a module record")?;
                    let le64 = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
                    let n = u16::from_le_bytes([b[2], b[3]]) as usize;
                    let (start, end, file_offset) = (le64(8), le64(16), le64(24));
                    if end < start {
                        return self.corrupt(
                            at,
                            format!("module ends ({end:#x}) before it starts ({start:#x})"),
                        );
                    }
                    if self.header.modules.len() >= MAX_MODULES as usize {
                        return self.corrupt(at, format!("more than {MAX_MODULES} modules"));
                    }
                    let mut pb = vec![0u8; n];
                    self.exact(&mut pb, "a module path")?;
                    let path = String::from_utf8(pb).map_err(|_| RecError::Corrupt {
                        offset: at,
                        what: "a module path is not UTF-8".into(),
                    })?;
                    self.header.modules.push(Module {
                        start,
                        end,
                        file_offset,
                        path,
                    });
                }
                KIND_END => {
                    let mut pad = [0u8; 7];
                    self.exact(&mut pad, "the trailer")?;
                    let hits = self.u64("the trailer")?;
                    let lost = self.u64("the trailer")?;
                    if hits != self.hits_seen || lost != self.lost_seen {
                        return self.corrupt(
                            at,
                            format!(
                                "the trailer counts {hits} hits and {lost} lost, the records {} and {}",
                                self.hits_seen, self.lost_seen
                            ),
                        );
                    }
                    let mut extra = [0u8; 1];
                    if read_up_to(&mut self.inp, &mut extra)? != 0 {
                        return self.corrupt(self.offset, "data after the trailer".into());
                    }
                    self.done = true;
                    return Ok(None);
                }
                k => return self.corrupt(at, format!("unknown record kind {k:#04x}")),
            }
        }
    }

    /// Totals so far (final once [`Reader::next_hit`] returned `Ok(None)`).
    pub fn totals(&self) -> Trailer {
        Trailer {
            hits: self.hits_seen,
            lost: self.lost_seen,
        }
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A hit with its parts owned, for building and comparing test files;
    /// a cut stack ends with [`crate::frames::CUT`].
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    struct Hit {
        watch: u16,
        tid: u32,
        cpu: u32,
        time_ns: u64,
        ip: u64,
        addr: u64,
        value: Option<u64>,
        stack: Vec<u64>,
    }

    impl Hit {
        fn extended(&self) -> Extended<'_> {
            let (stack, stack_truncated) = match self.stack.split_last() {
                Some((&crate::frames::CUT, rest)) => (rest, true),
                _ => (&self.stack[..], false),
            };
            Extended {
                sample: Sample {
                    bp: BpId(self.watch.into()),
                    cpu: CpuId(self.cpu),
                    task: Some(TaskId(self.tid.into())),
                    ip: self.ip,
                    addr: self.addr,
                    time: self.time_ns,
                },
                ext: Extension {
                    stack,
                    stack_truncated,
                    value: self.value,
                    ..Extension::NONE
                },
            }
        }

        fn from(h: &Extended<'_>) -> Hit {
            Hit {
                watch: h.sample.bp.0 as u16,
                tid: h.tid(),
                cpu: h.sample.cpu.0,
                time_ns: h.sample.time,
                ip: h.sample.ip,
                addr: h.sample.addr,
                value: h.ext.value,
                stack: h
                    .ext
                    .stack
                    .iter()
                    .copied()
                    .chain(h.ext.stack_truncated.then_some(crate::frames::CUT))
                    .collect(),
            }
        }
    }

    /// Read a whole file's hits.
    fn read_all(bytes: &[u8]) -> Result<(Header, Vec<Hit>, Trailer), RecError> {
        let mut r = Reader::new(bytes)?;
        let mut hits = Vec::new();
        while let Some(h) = r.next_hit()? {
            hits.push(Hit::from(&h));
        }
        let t = r.totals();
        Ok((r.header, hits, t))
    }

    fn sample_header() -> Header {
        Header {
            values: true,
            pid: 42,
            start_ns: 7,
            watches: vec![WatchEntry {
                name: "STATE.hits".into(),
                addr: 0x5555_0000_1000,
                len: 8,
                access: Access::Write,
            }],
            modules: vec![Module {
                start: 0x5555_0000_0000,
                end: 0x5555_0001_0000,
                file_offset: 0x1000,
                path: "/bin/demo".into(),
            }],
        }
    }

    fn write(h: &Header, hits: &[Hit], lost: u64) -> Vec<u8> {
        let mut w = Writer::new(Vec::new(), h).unwrap();
        for x in hits {
            w.hit(&x.extended()).unwrap();
        }
        w.lost(lost).unwrap();
        w.module(&Module {
            start: 0x7f00_0000_0000,
            end: 0x7f00_0001_0000,
            file_offset: 0,
            path: "/lib/libc.so.6".into(),
        })
        .unwrap();
        w.finish().unwrap().1
    }

    #[test]
    fn header_hits_and_lost_round_trip() {
        let hits = vec![
            Hit {
                watch: 0,
                tid: 9,
                cpu: 1,
                time_ns: 100,
                ip: 0x5555_0000_0123,
                addr: 0x5555_0000_1000,
                value: Some(5),
                stack: vec![1, 2, 3],
            },
            Hit {
                value: None,
                stack: vec![],
                ..Default::default()
            },
        ];
        let bytes = write(&sample_header(), &hits, 3);
        let (h, got, t) = read_all(&bytes).unwrap();
        let mut want = sample_header();
        want.modules.push(Module {
            start: 0x7f00_0000_0000,
            end: 0x7f00_0001_0000,
            file_offset: 0,
            path: "/lib/libc.so.6".into(),
        });
        assert_eq!(h, want);
        assert_eq!(got, hits);
        assert_eq!(t, Trailer { hits: 2, lost: 3 });
    }

    #[test]
    fn a_cut_stack_is_written_with_the_cut_marker_and_read_back_as_truncated() {
        let cut = crate::frames::CUT;
        let bytes = write(
            &sample_header(),
            &[Hit {
                stack: vec![1, 2, cut],
                ..Default::default()
            }],
            0,
        );
        let marker = cut.to_le_bytes();
        assert!(bytes.windows(8).any(|w| w == marker), "format unchanged");
        let mut r = Reader::new(&bytes[..]).unwrap();
        let h = r.next_hit().unwrap().unwrap();
        assert!(h.ext.stack_truncated);
        assert_eq!(h.ext.stack, &[1, 2]);
    }

    #[test]
    fn every_truncation_is_a_clear_error() {
        let bytes = write(
            &sample_header(),
            &[Hit {
                stack: vec![4; 5],
                ..Default::default()
            }],
            1,
        );
        for cut in 0..bytes.len() {
            let e = read_all(&bytes[..cut]).unwrap_err();
            let msg = e.to_string();
            assert!(
                matches!(e, RecError::Truncated { .. } | RecError::BadMagic),
                "cut {cut}: {msg}"
            );
            if cut >= 8 {
                assert!(msg.contains("truncated"), "cut {cut}: {msg}");
            }
        }
    }

    #[test]
    fn wrong_magic_and_version_are_named() {
        let mut bytes = write(&sample_header(), &[], 0);
        assert!(matches!(
            read_all(b"ELF\x7fxxxxxxxxx"),
            Err(RecError::BadMagic)
        ));
        bytes[8] = 9;
        assert!(matches!(read_all(&bytes), Err(RecError::Version(9))));
    }

    #[test]
    fn hit_for_unknown_watch_is_corrupt() {
        let mut bytes = write(&sample_header(), &[Hit::default()], 0);
        let hdr_len = bytes.len() - 24 - 32 - "/lib/libc.so.6".len() - HIT_SIZE;
        bytes[hdr_len + 2] = 5;
        let e = read_all(&bytes).unwrap_err();
        assert!(e.to_string().contains("watch #5"), "{e}");
    }

    #[test]
    fn trailer_mismatch_and_trailing_bytes_are_corrupt() {
        let mut bytes = write(&sample_header(), &[Hit::default()], 0);
        let n = bytes.len();
        bytes[n - 16] = 2;
        assert!(read_all(&bytes)
            .unwrap_err()
            .to_string()
            .contains("trailer counts"));
        let mut bytes = write(&sample_header(), &[], 0);
        bytes.push(0);
        assert!(read_all(&bytes)
            .unwrap_err()
            .to_string()
            .contains("after the trailer"));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = read_all(&bytes);
        }

        #[test]
        fn corrupting_a_valid_file_never_panics(
            pos in any::<prop::sample::Index>(),
            val in any::<u8>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let hits: Vec<Hit> = (0..4).map(|i| Hit { tid: i, stack: vec![i as u64; i as usize], ..Default::default() }).collect();
            let mut bytes = write(&sample_header(), &hits, 2);
            let p = pos.index(bytes.len());
            bytes[p] = val;
            let c = cut.index(bytes.len() + 1);
            let _ = read_all(&bytes[..c]);
        }

        #[test]
        fn random_hits_round_trip(hits in proptest::collection::vec(
            (any::<u32>(), any::<u64>(), any::<u64>(), proptest::option::of(any::<u64>()),
             proptest::collection::vec(any::<u64>(), 0..20)), 0..20)) {
            let hits: Vec<Hit> = hits.into_iter().map(|(tid, ip, time_ns, value, stack)| Hit {
                watch: 0, tid, cpu: 0, time_ns, ip, addr: 0, value, stack }).collect();
            let bytes = write(&sample_header(), &hits, 0);
            let (_, got, t) = read_all(&bytes).unwrap();
            prop_assert_eq!(t.hits, hits.len() as u64);
            prop_assert_eq!(got, hits);
        }
    }
}
