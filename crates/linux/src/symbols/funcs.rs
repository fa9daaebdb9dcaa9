//! A function's address range, for conditions on the writer (`func ==
//! "name"`): the run-time start from the [`Resolver`] (load bias applied),
//! and the size from the ELF symbol table of the file that defines it.

use super::{map_file, Resolver, ValueKind};
use crate::error::{Error, Result};
use object::{Object, ObjectSymbol};
use std::ops::Range;

/// A function's addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRange {
    /// From its first byte to one past its last.
    pub range: Range<u64>,
    /// The range is link-time, in a position-independent file that is not
    /// running yet: add the load bias (as [`super::Resolved::needs_rebase`]).
    pub needs_rebase: bool,
}

/// The address range of function `name` (which [`Resolver::resolve`]
/// accepts, e.g. `record_hit` or `libfoo.so:f`). An error when the name is
/// not a function, or its file gives it no size.
pub fn function_range(r: &Resolver, name: &str) -> Result<FunctionRange> {
    let res = r
        .resolve(name)
        .map_err(|e| Error::Invalid(format!("condition: {e}")))?;
    let not = |why: &str| Error::Invalid(format!("condition: `{name}` {why}"));
    if res.value_kind != ValueKind::Code {
        return Err(not(
            "is not a function (a condition's func names the function that writes)",
        ));
    }
    let bare = name.rsplit(':').next().unwrap_or(name).trim();
    let size = res
        .module
        .as_deref()
        .and_then(|m| map_file(std::path::Path::new(m)))
        .and_then(|map| {
            let f = object::File::parse(&*map).ok()?;
            f.symbols()
                .chain(f.dynamic_symbols())
                .find(|s| s.name() == Ok(bare) && s.size() > 0)
                .map(|s| s.size())
        })
        .ok_or_else(|| not("has no size in its ELF symbol table"))?;
    Ok(FunctionRange {
        range: res.addr..res.addr + size,
        needs_rebase: res.needs_rebase,
    })
}
