//! Parsers: each reads a contender's own output and says how many hits it saw.

use crate::contenders::{Count, StepOutput};

/// The failure of the first step that failed: its status and the first and
/// last lines of what it said (clap and perf put the reason first, gdb last).
pub(crate) fn first_error(outs: &[StepOutput]) -> Option<String> {
    outs.iter().find(|o| !o.success).map(|o| {
        let msg = if o.stderr.trim().is_empty() {
            &o.stdout
        } else {
            &o.stderr
        };
        let lines: Vec<&str> = msg
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let said = match lines.as_slice() {
            [] => "(no output)".to_string(),
            [one] => (*one).to_string(),
            [first, .., last] => format!("{first} ... {last}"),
        };
        format!("{}: {}", o.status, clip(&said))
    })
}

/// `raw_count`: `hits=N seconds=S status=C`.
pub(crate) fn parse_raw_count(outs: &[StepOutput]) -> std::result::Result<Count, String> {
    if let Some(e) = first_error(outs) {
        return Err(e);
    }
    let hits = outs[0]
        .stdout
        .split_whitespace()
        .find_map(|w| w.strip_prefix("hits="))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no hits= in raw_count output: {:?}", outs[0].stdout))?;
    Ok(Count::exact(hits))
}

/// All JSON objects found one per line in `text`.
pub(crate) fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
        .filter(|v| v.is_object())
        .collect()
}

/// The first unsigned integer under any of `keys`, searching `v` depth first.
pub(crate) fn find_u64(v: &serde_json::Value, keys: &[&str]) -> Option<u64> {
    match v {
        serde_json::Value::Object(m) => keys
            .iter()
            .find_map(|k| m.get(*k).and_then(|x| x.as_u64()))
            .or_else(|| m.values().find_map(|x| find_u64(x, keys))),
        serde_json::Value::Array(a) => a.iter().find_map(|x| find_u64(x, keys)),
        _ => None,
    }
}

/// Is this a summary object (as opposed to a hit) of `hwbreak watch --json`?
pub(crate) fn is_summary(v: &serde_json::Value) -> bool {
    v.get("lost").is_some()
        || v.get("summary").is_some()
        || v.get("type").and_then(|t| t.as_str()) == Some("summary")
}

/// The JSON of an hwbreak `--json` output (one document, or JSON lines) and
/// the first hit total in it; `what` names the command for the error.
pub(crate) fn json_total(
    text: &str,
    what: &str,
) -> std::result::Result<(Vec<serde_json::Value>, u64), String> {
    let text = text.trim();
    let values = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => vec![v],
        Err(_) => json_lines(text),
    };
    let hits = values
        .iter()
        .find_map(|v| find_u64(v, &["total", "hits", "count"]))
        .ok_or_else(|| format!("no hit total in `{what}` output: {:?}", clip(text)))?;
    Ok((values, hits))
}

/// `hwbreak stat --json`: the whole output as JSON (or JSON lines), total hits.
pub(crate) fn parse_hwbreak_stat(outs: &[StepOutput]) -> std::result::Result<Count, String> {
    if let Some(e) = first_error(outs) {
        return Err(e);
    }
    let (_, hits) = json_total(&outs[0].stdout, "hwbreak stat --json")?;
    Ok(Count::exact(hits))
}

/// A stdout line of `hwbreak watch --json` that is a hit object
/// (`{"type":"hit",...}`, docs/CLI.md).
pub(crate) fn is_watch_hit_line(line: &str) -> bool {
    line.trim_start().starts_with('{') && line.contains("\"type\":\"hit\"")
}

/// `hwbreak watch --json`: hit lines counted while streaming, lost from the summary.
pub(crate) fn parse_hwbreak_watch(outs: &[StepOutput]) -> std::result::Result<Count, String> {
    if let Some(e) = first_error(outs) {
        return Err(e);
    }
    let summary = json_lines(&outs[0].stdout)
        .into_iter()
        .rev()
        .find(is_summary);
    let Some(summary) = summary else {
        return Err(format!(
            "`hwbreak watch --json` printed no summary object (with \"lost\"): {:?}",
            clip(&outs[0].stdout)
        ));
    };
    let lost = find_u64(&summary, &["lost"]);
    Ok(Count {
        hits: outs[0].counted,
        lost,
        note: None,
    })
}

/// `hwbreak report --json`: the total hits in the file.
pub(crate) fn parse_hwbreak_report(outs: &[StepOutput]) -> std::result::Result<Count, String> {
    if let Some(e) = first_error(outs) {
        return Err(e);
    }
    let (values, hits) = json_total(&outs[1].stdout, "hwbreak report --json")?;
    let lost = values.iter().find_map(|v| find_u64(v, &["lost"]));
    Ok(Count {
        hits,
        lost,
        note: None,
    })
}

/// gdb: `breakpoint already hit N time(s)` from `info watchpoints`.
pub(crate) fn parse_gdb(outs: &[StepOutput]) -> std::result::Result<Count, String> {
    if let Some(e) = first_error(outs) {
        return Err(e);
    }
    let o = &outs[0];
    if !o.stdout.contains("exited normally") {
        return Err(format!(
            "gdb: the target did not exit normally: {:?}",
            clip(&o.stdout)
        ));
    }
    let hits = o
        .stdout
        .lines()
        .find_map(|l| {
            let rest = l.trim().strip_prefix("breakpoint already hit ")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        // gdb prints no "already hit" line for a watchpoint that never fired.
        .unwrap_or(0);
    Ok(Count::exact(hits))
}

/// A `perf script -F comm,tid,time,event,ip,sym` sample header line (the
/// callchain lines below it are indented).
pub(crate) fn is_perf_script_sample(line: &str) -> bool {
    !line.starts_with(char::is_whitespace) && line.contains(" mem:0x")
}

/// perf: samples printed by `perf script`, lost chunks from either step.
pub(crate) fn parse_perf(outs: &[StepOutput]) -> std::result::Result<Count, String> {
    if let Some(e) = first_error(outs) {
        return Err(e);
    }
    let lost = outs.iter().flat_map(|o| o.stderr.lines()).find_map(|l| {
        // "Processed N events and lost M chunks!"
        let i = l.find(" and lost ")?;
        l[i + 10..].split_whitespace().next()?.parse::<u64>().ok()
    });
    Ok(Count {
        hits: outs[1].counted,
        lost: Some(lost.unwrap_or(0)),
        note: None,
    })
}

/// bpftrace `count()`: `@hits: N` (absent when nothing hit).
pub(crate) fn parse_bpftrace_count(outs: &[StepOutput]) -> std::result::Result<Count, String> {
    if let Some(e) = first_error(outs) {
        return Err(e);
    }
    let hits = outs[0]
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("@hits:")?.trim().parse().ok())
        .unwrap_or(0);
    Ok(Count::exact(hits))
}

pub(crate) fn is_bpftrace_hit_line(line: &str) -> bool {
    line.starts_with("hit tid=")
}

/// bpftrace printf: `hit ...` lines; `Lost N events` lines sum to the loss.
pub(crate) fn parse_bpftrace_printf(outs: &[StepOutput]) -> std::result::Result<Count, String> {
    if let Some(e) = first_error(outs) {
        return Err(e);
    }
    // The lost lines are counted in the streamed output too (see run_step).
    let lost = outs[0]
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("#lost-total ")?.parse().ok())
        .unwrap_or(0);
    Ok(Count {
        hits: outs[0].counted,
        lost: Some(lost),
        note: None,
    })
}

pub(crate) fn clip(s: &str) -> String {
    const MAX: usize = 300;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}
