//! Tiny task programs, so scenarios read as what the tasks do.
//!
//! ```
//! use hwbreak_sim::Program;
//! let p = Program::new().write(0x1000, 4).read(0x1000, 8).exec(0x40_0100).yield_now();
//! assert_eq!(p.ops().len(), 4);
//! ```

use std::sync::Arc;

/// Where task code lives by default (every task runs "the same binary").
pub const CODE_BASE: u64 = 0x40_0000;

/// Every instruction is 4 bytes long in the simulator (A64 and POWER are;
/// x86 is modelled with the same length for simplicity).
pub const INSN_LEN: u64 = 4;

/// One step of a task's program. Each memory or execute step is one instruction.
#[derive(Debug, Clone)]
pub enum Op {
    /// Load `len` bytes at `addr`.
    Read {
        /// Address.
        addr: u64,
        /// Bytes.
        len: u64,
    },
    /// Store `len` bytes at `addr`.
    Write {
        /// Address.
        addr: u64,
        /// Bytes.
        len: u64,
    },
    /// Jump to `ip` and execute a plain (no memory access) instruction there.
    Exec {
        /// Instruction address.
        ip: u64,
    },
    /// A plain instruction at the current pc.
    Nop,
    /// Give up the CPU (a voluntary context switch).
    Yield,
    /// Create a child task (a thread) running `program`. With `inherit`, the
    /// child gets a copy of every inheritable breakpoint of this task (perf's
    /// `attr.inherit`); if one does not fit the spawn fails like `fork`
    /// failing, and is counted in [`crate::Stats::spawn_failed`].
    Spawn {
        /// What the child runs.
        program: Arc<Program>,
        /// Copy inheritable breakpoints.
        inherit: bool,
    },
    /// Block until every child this task spawned has exited (`pthread_join`).
    Join,
    /// Exit (also implied at the end of a program that does not repeat).
    Exit,
}

/// A task's program.
#[derive(Debug, Clone)]
pub struct Program {
    ops: Vec<Op>,
    code: u64,
    repeat: bool,
}

impl Default for Program {
    fn default() -> Self {
        Self::new()
    }
}

impl Program {
    /// An empty program at [`CODE_BASE`] that exits when done.
    pub fn new() -> Self {
        Program {
            ops: Vec::new(),
            code: CODE_BASE,
            repeat: false,
        }
    }

    /// Put the code somewhere else.
    pub fn at(mut self, code: u64) -> Self {
        self.code = code;
        self
    }

    /// Start over instead of exiting at the end.
    pub fn repeat(mut self) -> Self {
        self.repeat = true;
        self
    }

    /// Append any op.
    pub fn op(mut self, op: Op) -> Self {
        self.ops.push(op);
        self
    }

    /// Append a load.
    pub fn read(self, addr: u64, len: u64) -> Self {
        self.op(Op::Read { addr, len })
    }

    /// Append a store.
    pub fn write(self, addr: u64, len: u64) -> Self {
        self.op(Op::Write { addr, len })
    }

    /// Append an instruction at `ip`.
    pub fn exec(self, ip: u64) -> Self {
        self.op(Op::Exec { ip })
    }

    /// Append a plain instruction.
    pub fn nop(self) -> Self {
        self.op(Op::Nop)
    }

    /// Append a voluntary yield.
    pub fn yield_now(self) -> Self {
        self.op(Op::Yield)
    }

    /// Append a spawn.
    pub fn spawn(self, program: Program, inherit: bool) -> Self {
        self.op(Op::Spawn {
            program: Arc::new(program),
            inherit,
        })
    }

    /// Append a join.
    pub fn join(self) -> Self {
        self.op(Op::Join)
    }

    /// Append an exit.
    pub fn exit(self) -> Self {
        self.op(Op::Exit)
    }

    /// The ops.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Code start.
    pub fn code(&self) -> u64 {
        self.code
    }

    /// Whether it starts over at the end.
    pub fn repeats(&self) -> bool {
        self.repeat
    }
}
