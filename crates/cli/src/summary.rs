//! Totals over a stream of hits: per watch, per thread, and per writer stack.
//! `watch` (live) and `report` (offline) share it, so both print the same summary.

use crate::frames::{FrameCache, Symbolize};
use hwbreak_core::events::Extended;
use rustc_hash::FxHashMap as HashMap;
use serde::Serialize;
use std::io::{self, Write};

/// `s` safe to print on a terminal: control characters (a record file's
/// watch names are bytes from a file) are shown escaped (`\u{1b}`), never
/// sent raw.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return s.into();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// One watch's line in the summary.
#[derive(Debug, Clone, Serialize)]
pub struct WatchTotal {
    /// Name as the user gave it.
    pub name: String,
    /// Address watched.
    #[serde(serialize_with = "crate::frames::hex")]
    pub addr: u64,
    /// Bytes watched.
    pub len: u64,
    /// Access watched (`r`, `w`, `rw`, `x`).
    pub access: &'static str,
    /// Hits.
    pub hits: u64,
    /// With `--if`: the hits that matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched: Option<u64>,
}

impl WatchTotal {
    /// A watch with no hits yet.
    pub fn new(name: &str, addr: u64, len: u64, access: hwbreak_core::Access) -> Self {
        WatchTotal {
            name: name.to_string(),
            addr,
            len,
            access: access.short(),
            hits: 0,
            matched: None,
        }
    }
}

/// Running totals.
#[derive(Debug, Default)]
pub struct Agg {
    /// Per watch, in watch-table order.
    pub watches: Vec<WatchTotal>,
    per_thread: rustc_hash::FxHashMap<u32, u64>,
    /// Key: `[watch, ip, return addresses...]`.
    /// FxHash: this map is looked up once per hit.
    stacks: rustc_hash::FxHashMap<Vec<u64>, u64>,
    key: Vec<u64>,
    /// All hits.
    pub hits: u64,
    /// With `--if`: the hits that matched (only those were sampled).
    pub matched: Option<u64>,
    /// Records the kernel dropped.
    pub lost: u64,
    /// Hits whose stack was cut (it ends with [`crate::frames::CUT`]).
    pub stacks_cut: u64,
    /// First and last hit time (perf clock, ns).
    pub first_ns: Option<u64>,
    /// Last hit time.
    pub last_ns: u64,
}

impl Agg {
    /// Totals for these watches, all zero.
    pub fn new(watches: Vec<WatchTotal>) -> Self {
        Agg {
            watches,
            ..Default::default()
        }
    }

    /// Count one hit of watch `watch` whose stack (return addresses) may
    /// end with the [`crate::frames::CUT`] marker.
    pub fn add(&mut self, watch: usize, tid: u32, time_ns: u64, ip: u64, stack: &[u64]) {
        let (stack, cut) = match stack.split_last() {
            Some((&crate::frames::CUT, rest)) => (rest, true),
            _ => (stack, false),
        };
        self.add_hit(&Extended {
            sample: hwbreak_core::events::Sample {
                bp: hwbreak_core::BpId(watch as u32),
                cpu: hwbreak_core::CpuId(0),
                task: Some(hwbreak_core::TaskId(tid.into())),
                ip,
                addr: 0,
                time: time_ns,
            },
            ext: hwbreak_core::events::Extension {
                stack,
                stack_truncated: cut,
                ..hwbreak_core::events::Extension::NONE
            },
        });
    }

    /// Count one hit (`sample.bp` is the watch's index). Only allocates
    /// for a stack not seen before.
    pub fn add_hit(&mut self, h: &Extended<'_>) {
        let (watch, time_ns) = (h.watch(), h.sample.time);
        self.hits += 1;
        if let Some(w) = self.watches.get_mut(watch) {
            w.hits += 1;
        }
        *self.per_thread.entry(h.tid()).or_default() += 1;
        self.first_ns.get_or_insert(time_ns);
        self.last_ns = self.last_ns.max(time_ns);
        self.key.clear();
        self.key.push(watch as u64);
        self.key.push(h.sample.ip);
        self.key.extend_from_slice(h.ext.stack);
        // A cut stack's key ends with the marker: it is listed as cut.
        if h.ext.stack_truncated {
            self.stacks_cut += 1;
            self.key.push(crate::frames::CUT);
        }
        if let Some(c) = self.stacks.get_mut(self.key.as_slice()) {
            *c += 1;
        } else {
            self.stacks.insert(self.key.clone(), 1);
        }
    }

    /// Threads by hits, most first (ties by tid).
    pub fn threads(&self) -> Vec<(u32, u64)> {
        let mut v: Vec<(u32, u64)> = self.per_thread.iter().map(|(&t, &c)| (t, c)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }

    /// The `n` most frequent `(watch, ip + stack)` pairs, most first.
    pub fn top_stacks(&self, n: usize) -> Vec<(usize, &[u64], u64)> {
        let mut v: Vec<(&Vec<u64>, u64)> = self.stacks.iter().map(|(k, &c)| (k, c)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        v.into_iter()
            .take(n)
            .map(|(k, c)| (k[0] as usize, &k[1..], c))
            .collect()
    }

    /// Whether hits of watch `w` report the exact instruction (execute watches).
    pub fn exact(&self, w: usize) -> bool {
        self.watches.get(w).is_some_and(|w| w.access == "x")
    }

    /// Distinct stacks seen.
    pub fn distinct_stacks(&self) -> usize {
        self.stacks.len()
    }

    /// Seconds between the first and last hit.
    pub fn span_s(&self) -> f64 {
        self.first_ns
            .map(|f| self.last_ns.saturating_sub(f) as f64 / 1e9)
            .unwrap_or(0.0)
    }
}

/// The summary as JSON (`"type":"summary"`).
#[derive(Debug, Serialize)]
pub struct SummaryJson<'a> {
    /// Always `"summary"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// All hits.
    pub hits: u64,
    /// With `--if`: the hits that matched (the hit lines are these).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched: Option<u64>,
    /// Records the kernel dropped; 0 means none was.
    pub lost: u64,
    /// Hits whose stack went deeper than the copied stack bytes and is cut.
    pub stacks_cut: u64,
    /// Wall-clock seconds watched (or the span of hits, for `report`).
    pub duration_s: f64,
    /// Per watch.
    pub watches: &'a [WatchTotal],
    /// Per thread, most hits first.
    pub threads: Vec<ThreadJson>,
    /// Most frequent writer stacks.
    pub top_stacks: Vec<StackJson>,
    /// How the target ended, when hwbreak saw it end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_exit: Option<String>,
    /// With `--stop`: where the process stopped, left stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

/// A thread's hit count.
#[derive(Debug, Serialize)]
pub struct ThreadJson {
    /// Thread id.
    pub tid: u32,
    /// Hits.
    pub hits: u64,
}

/// One frequent stack.
#[derive(Debug, Serialize)]
pub struct StackJson {
    /// The watch's name.
    pub watch: String,
    /// Hits with exactly this stack.
    pub hits: u64,
    /// IP first, then return addresses.
    pub frames: Vec<crate::frames::Frame>,
    /// The stack went on above the copied bytes: `frames` is its innermost part.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// Everything needed to print a summary.
pub struct SummaryView<'a> {
    /// Totals.
    pub agg: &'a Agg,
    /// Seconds to show.
    pub duration_s: f64,
    /// Stacks to show.
    pub top: usize,
    /// How the target ended.
    pub target_exit: Option<String>,
    /// With `--stop`: where the process stopped (it was left stopped).
    pub stopped: Option<String>,
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let d = n.to_string();
    let mut out = String::with_capacity(d.len() + d.len() / 3);
    for (i, c) in d.chars().enumerate() {
        if i > 0 && (d.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

type Frames = Vec<std::rc::Rc<crate::frames::Frame>>;

/// A writer stack as shown: frames up to the thread's entry, and its hits.
pub struct ShownStack {
    /// Watch index.
    pub watch: usize,
    /// IP first, then callers, runtime frames cut.
    pub frames: Vec<std::rc::Rc<crate::frames::Frame>>,
    /// Hits.
    pub hits: u64,
}

impl SummaryView<'_> {
    /// The top stacks, merging stacks that differ only below the thread's
    /// entry point (runtime frames). Every distinct address is symbolized
    /// once; when there are very many distinct stacks, only the 10 000 most
    /// frequent are considered.
    pub fn shown_stacks<S: Symbolize>(&self, sym: &mut FrameCache<S>) -> Vec<ShownStack> {
        let all = self.agg.top_stacks(10_000);
        let mut merged: HashMap<(usize, Vec<u64>), (Frames, u64)> = HashMap::default();
        for (w, ips, c) in all {
            let mut frames = sym.stack(ips, self.agg.exact(w));
            if let Some(cut) = frames
                .iter()
                .skip(1)
                .position(|f| crate::frames::is_runtime_entry(f))
            {
                frames.truncate(cut + 1);
            }
            let key = (w, frames.iter().map(|f| f.ip).collect());
            let e = merged.entry(key).or_insert_with(|| (frames, 0));
            e.1 += c;
        }
        let mut v: Vec<ShownStack> = merged
            .into_iter()
            .map(|((watch, _), (frames, hits))| ShownStack {
                watch,
                frames,
                hits,
            })
            .collect();
        v.sort_by(|a, b| {
            b.hits.cmp(&a.hits).then_with(|| {
                let ka: Vec<u64> = a.frames.iter().map(|f| f.ip).collect();
                let kb: Vec<u64> = b.frames.iter().map(|f| f.ip).collect();
                (a.watch, ka).cmp(&(b.watch, kb))
            })
        });
        v.truncate(self.top);
        v
    }

    /// Build the JSON object (symbolizing only the shown stacks' addresses).
    pub fn json<S: Symbolize>(&self, sym: &mut FrameCache<S>) -> SummaryJson<'_> {
        let top_stacks = self
            .shown_stacks(sym)
            .into_iter()
            .map(|st| StackJson {
                watch: self
                    .agg
                    .watches
                    .get(st.watch)
                    .map(|w| w.name.clone())
                    .unwrap_or_default(),
                hits: st.hits,
                frames: st
                    .frames
                    .iter()
                    .filter(|f| !f.is_cut())
                    .map(|f| (**f).clone())
                    .collect(),
                truncated: st.frames.iter().any(|f| f.is_cut()),
            })
            .collect();
        SummaryJson {
            kind: "summary",
            hits: self.agg.hits,
            matched: self.agg.matched,
            lost: self.agg.lost,
            stacks_cut: self.agg.stacks_cut,
            duration_s: (self.duration_s * 1000.0).round() / 1000.0,
            watches: &self.agg.watches,
            threads: self
                .agg
                .threads()
                .into_iter()
                .map(|(tid, hits)| ThreadJson { tid, hits })
                .collect(),
            top_stacks,
            target_exit: self.target_exit.clone(),
            stopped: self.stopped.clone(),
        }
    }

    /// Print the human summary.
    pub fn text<S: Symbolize>(
        &self,
        out: &mut impl Write,
        sym: &mut FrameCache<S>,
    ) -> io::Result<()> {
        let a = self.agg;
        writeln!(out)?;
        let rate = if self.duration_s > 0.0 {
            format!(" ({:.0}/s)", a.hits as f64 / self.duration_s)
        } else {
            String::new()
        };
        // With --if: "1,000,000 hits, 3 matched".
        let (hits, matched) = match a.matched {
            Some(m) => (thousands(a.hits), format!(", {} matched", thousands(m))),
            None => (a.hits.to_string(), String::new()),
        };
        writeln!(
            out,
            "── summary: {hits} hits{matched} in {:.2} s{rate}, lost: {} ──",
            self.duration_s, a.lost
        )?;
        if let Some(e) = &self.target_exit {
            writeln!(out, "target {e}")?;
        }
        if let Some(st) = &self.stopped {
            writeln!(out, "{st}")?;
        }
        if a.stacks_cut > 0 {
            writeln!(
                out,
                "{} of the stacks were deeper than the copied stack bytes and are cut (raise --stack-bytes, or use --kernel-stack)",
                a.stacks_cut
            )?;
        }
        let wn = a
            .watches
            .iter()
            .map(|w| printable(&w.name).len())
            .max()
            .unwrap_or(5)
            .max(5);
        writeln!(out, "  {:<wn$}  {:>10}", "watch", "hits")?;
        for w in &a.watches {
            writeln!(
                out,
                "  {:<wn$}  {:>10}   {:#x}/{}:{}",
                printable(&w.name),
                w.hits,
                w.addr,
                w.len,
                w.access
            )?;
        }
        let threads = a.threads();
        if !threads.is_empty() {
            writeln!(out, "  {:<8}  {:>10}", "thread", "hits")?;
            for (tid, c) in threads.iter().take(16) {
                writeln!(out, "  {tid:<8}  {c:>10}")?;
            }
            if threads.len() > 16 {
                let rest: u64 = threads[16..].iter().map(|t| t.1).sum();
                writeln!(out, "  {} more threads  {rest:>10}", threads.len() - 16)?;
            }
        }
        let top = self.shown_stacks(sym);
        if !top.is_empty() {
            writeln!(out, "  top writer stacks:")?;
            for st in top {
                let name = a
                    .watches
                    .get(st.watch)
                    .map(|w| printable(&w.name))
                    .unwrap_or("?".into());
                writeln!(out, "  {:>8} × {name}", st.hits)?;
                for f in &st.frames {
                    writeln!(out, "             {}", f.text())?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::NoSymbols;

    fn agg() -> Agg {
        Agg::new(vec![WatchTotal {
            name: "x".into(),
            addr: 0x10,
            len: 8,
            access: "w",
            hits: 0,
            matched: None,
        }])
    }

    #[test]
    fn top_stacks_are_ordered_by_count_and_keep_the_watch() {
        let mut a = agg();
        for _ in 0..3 {
            a.add(0, 1, 5, 0xa, &[0xb]);
        }
        a.add(0, 2, 9, 0xc, &[]);
        let top = a.top_stacks(5);
        assert_eq!(top[0], (0, &[0xa, 0xb][..], 3));
        assert_eq!(top[1], (0, &[0xc][..], 1));
        assert_eq!(a.threads(), vec![(1, 3), (2, 1)]);
        assert_eq!(a.distinct_stacks(), 2);
        assert_eq!(a.watches[0].hits, 4);
    }

    #[test]
    fn control_characters_in_a_watch_name_are_printed_escaped() {
        assert_eq!(printable("STATE.hits"), "STATE.hits");
        assert_eq!(printable("a\x1b[2Jb\n"), "a\\u{1b}[2Jb\\n");
        let mut a = Agg::new(vec![WatchTotal::new(
            "evil\x1b]0;title\x07",
            0x10,
            8,
            hwbreak_core::Access::Write,
        )]);
        a.add(0, 1, 5, 0xa, &[]);
        let mut out = Vec::new();
        let v = SummaryView {
            agg: &a,
            duration_s: 0.0,
            top: 5,
            target_exit: None,
            stopped: None,
        };
        v.text(&mut out, &mut FrameCache::new(NoSymbols)).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(!s.chars().any(|c| c.is_control() && c != '\n'), "{s:?}");
        assert!(s.contains("evil\\u{1b}]0;title\\u{7}"), "{s}");
    }

    #[test]
    fn text_summary_always_shows_lost() {
        let a = agg();
        let mut out = Vec::new();
        let v = SummaryView {
            agg: &a,
            duration_s: 0.0,
            top: 5,
            target_exit: None,
            stopped: None,
        };
        v.text(&mut out, &mut FrameCache::new(NoSymbols)).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("lost: 0"), "{s}");
        let j = serde_json::to_value(v.json(&mut FrameCache::new(NoSymbols))).unwrap();
        assert_eq!(j["lost"], 0);
        assert_eq!(j["type"], "summary");
    }

    #[test]
    fn thousands_groups_digits_by_three() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(thousands(12_345_678), "12,345,678");
    }
}
