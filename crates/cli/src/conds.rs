//! `--if EXPR` and `--stop`: check the condition at start, build the
//! kernel filter for a planned session ([`hwbreak_linux::filter`]), and
//! say where the process stopped.

use crate::error::CliError;
use crate::plan::{format_value, Plan, TargetKind, NO_ASLR_PIE_BASE};
use crate::summary::Agg;
use hwbreak_linux::cond::{Bound, Cond, ValueType, Var};
use hwbreak_linux::filter::{FilterWatch, HitFilter, StopRecord};
use hwbreak_linux::symbols::{function_range, Resolver, ValueKind};
use std::sync::Arc;

/// What the user asked: a condition, a stop, both, or neither.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    /// `--if EXPR`.
    pub expr: Option<String>,
    /// `--stop`.
    pub stop: bool,
}

impl Conditions {
    /// Whether hits go through a filter at all.
    pub fn active(&self) -> bool {
        self.expr.is_some() || self.stop
    }

    /// Parse the condition (before anything is launched or opened): a bad
    /// one is a usage error with its column.
    pub fn parse(&self) -> Result<Option<Cond>, CliError> {
        self.expr
            .as_deref()
            .map(|e| Cond::parse(e).map_err(|e| CliError::usage(format!("--if: {e}"))))
            .transpose()
    }
}

/// The type `old` and `new` have for a slot piece of `len` bytes of a
/// watch of kind `kind`, or why a condition on them cannot be checked.
fn value_type(kind: ValueKind, len: u64, pieces: usize, name: &str) -> Result<ValueType, String> {
    let ty = ValueType {
        len: len.clamp(1, 8) as u8,
        signed: kind == ValueKind::Signed,
    };
    match kind {
        _ if pieces > 1 => Err(format!(
            "`{name}` takes {pieces} slots, and old/new are one slot's value: watch a field of at most 8 bytes"
        )),
        ValueKind::Float => Err(format!(
            "`{name}` is a float, and old/new compare integers: watch an integer"
        )),
        ValueKind::Code => Err(format!(
            "`{name}` is a function (an execute breakpoint): old/new are values written to a variable"
        )),
        _ => Ok(ty),
    }
}

/// Build the filter for `plan`'s slot pieces, or `None` without `--if`
/// and `--stop`. `initial`: each user watch's value before the first hit.
/// `pid`: the running target, for `func` names (else the launched file).
pub fn build(
    c: &Conditions,
    plan: &Plan,
    initial: &[Option<u64>],
    pid: Option<i32>,
) -> Result<Option<Arc<HitFilter>>, CliError> {
    if !c.active() {
        return Ok(None);
    }
    if matches!(plan.target, TargetKind::AllCpus) && c.stop {
        return Err(CliError::usage(
            "--stop stops a process: use it with -p PID or a command, not -a",
        ));
    }
    let cond = c.parse()?;
    let uses_value = cond
        .as_ref()
        .is_some_and(|c| c.uses(Var::Old) || c.uses(Var::New));
    let mut watches = Vec::new();
    for (wi, attr) in &plan.pieces {
        let w = &plan.watches[*wi];
        let pieces = plan.pieces.iter().filter(|p| p.0 == *wi).count();
        let ty = match value_type(w.kind, attr.len, pieces, &w.name) {
            Ok(ty) => ty,
            Err(why) if uses_value => return Err(CliError::usage(format!("--if: {why}"))),
            Err(_) => ValueType {
                len: attr.len.clamp(1, 8) as u8,
                signed: false,
            },
        };
        let bound = match &cond {
            Some(c) => c
                .bind(ty)
                .map_err(|e| CliError::usage(format!("--if (watch `{}`): {e}", w.name)))?,
            None => Bound::always(ty),
        };
        watches.push(FilterWatch {
            addr: attr.addr,
            ty,
            cond: bound,
            initial: if pieces == 1 {
                initial.get(*wi).copied().flatten().unwrap_or(0)
            } else {
                0
            },
        });
    }
    let resolver = std::cell::OnceCell::new();
    let funcs = |name: &str| -> hwbreak_linux::Result<Vec<std::ops::Range<u64>>> {
        let r = match resolver.get() {
            Some(r) => r,
            None => {
                let r = match (pid, &plan.target) {
                    (Some(p), _) => Resolver::for_pid(p),
                    (None, TargetKind::Launch(cmd)) => Resolver::for_exe(&cmd[0]),
                    _ => {
                        return Err(hwbreak_linux::Error::Invalid(
                            "func conditions need a process (-p PID or a command)".into(),
                        ))
                    }
                }
                .map_err(|e| hwbreak_linux::Error::Invalid(format!("condition: {e}")))?;
                resolver.get_or_init(|| r)
            }
        };
        let f = function_range(r, name)?;
        // The same rule as the plan's addresses: a launched PIE runs at the
        // no-ASLR base.
        let bias = if f.needs_rebase { NO_ASLR_PIE_BASE } else { 0 };
        Ok(std::iter::once(f.range.start + bias..f.range.end + bias).collect())
    };
    HitFilter::new(&watches, c.stop, &funcs)
        .map(|f| Some(Arc::new(f)))
        .map_err(CliError::Linux)
}

/// Put the filter's exact counts into the summary: every hit per watch
/// (the samples were only the matches), and the matches.
pub fn count_into(
    f: &HitFilter,
    piece_watch: &[usize],
    agg: &mut Agg,
) -> hwbreak_linux::Result<()> {
    for w in agg.watches.iter_mut() {
        w.hits = 0;
    }
    let (mut hits, mut matched) = (0, 0);
    for (piece, &wi) in piece_watch.iter().enumerate() {
        let c = f.counts(piece)?;
        if let Some(w) = agg.watches.get_mut(wi) {
            w.hits += c.hits;
            *w.matched.get_or_insert(0) += c.matched;
        }
        hits += c.hits;
        matched += c.matched;
    }
    agg.hits = hits;
    agg.matched = Some(matched);
    Ok(())
}

/// The line that says where the process stopped, e.g. `stopped pid 4113
/// at the write: tid 4115, STATE.hits 0 → 1 at record_hit+0xc
/// (main.rs:70); attach with: gdb -p 4113`.
pub fn stop_line(
    pid: i32,
    rec: &StopRecord,
    plan: &Plan,
    piece_watch: &[usize],
    at: &str,
) -> String {
    let w = &plan.watches[piece_watch.get(rec.watch).copied().unwrap_or(0)];
    let fmt = |v: u64| format_value(v, w.len.min(8), w.kind);
    format!(
        "stopped pid {pid} at the write: tid {}, {} {} → {} at {at}; attach with: gdb -p {pid}",
        rec.tid,
        w.name,
        fmt(rec.old),
        fmt(rec.new)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_and_new_refuse_floats_functions_and_wide_watches() {
        assert!(value_type(ValueKind::Float, 8, 1, "f")
            .unwrap_err()
            .contains("float"));
        assert!(value_type(ValueKind::Code, 1, 1, "f")
            .unwrap_err()
            .contains("function"));
        assert!(value_type(ValueKind::Bytes, 8, 3, "s")
            .unwrap_err()
            .contains("3 slots"));
        let t = value_type(ValueKind::Signed, 4, 1, "i").unwrap();
        assert_eq!((t.len, t.signed), (4, true));
    }

    #[test]
    fn a_bad_condition_is_a_usage_error_with_its_column() {
        let c = Conditions {
            expr: Some("new = 3".into()),
            stop: false,
        };
        let e = c.parse().unwrap_err();
        assert!(matches!(e, CliError::Usage(_)));
        assert!(e.to_string().contains("column 5"), "{e}");
    }
}
