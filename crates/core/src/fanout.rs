//! One engine for "the same breakpoint on every member of a domain":
//! all-or-nothing, with rollback, following members that join or leave.
//!
//! The domain is every online CPU for wide breakpoints in the layer, and every
//! thread of a process in `hwbreak-linux`. Registration runs in two phases:
//!
//! 1. **prepare** each member (book a slot, open a disabled perf event). Any
//!    failure aborts every member prepared so far, in reverse order, and the
//!    caller learns which member failed and why. Nothing is left behind.
//!    (The layer's wide registration books every online CPU in one
//!    all-or-nothing call, `Slots::reserve_cpus`, before the fan-out runs, so
//!    there its prepare has nothing left to do; a CPU that joins later is
//!    booked in its own prepare.)
//! 2. **commit** each member (write the hardware, enable the event). Commit
//!    cannot fail, so no hit can ever come from a half-done request.
//!
//! Members that appear later (a CPU coming online, a new thread) are added
//! with [`Fanout::join`], which runs both phases for that one member; members
//! that go away are dropped with [`Fanout::leave`].

use alloc::vec::Vec;

/// A domain the fan-out runs over: what preparing, committing and undoing
/// one member means.
pub trait Domain {
    /// A member's name (a CPU, a thread id).
    type Member: Copy + Eq + core::fmt::Debug;
    /// What prepare leaves behind for commit or abort (a booking, an fd).
    type Handle;
    /// Why a member could not be prepared.
    type Error;

    /// Fallible first phase for one member. Must leave no trace on error.
    fn prepare(&mut self, member: Self::Member) -> Result<Self::Handle, Self::Error>;
    /// Infallible second phase: make it live.
    fn commit(&mut self, member: Self::Member, handle: &mut Self::Handle);
    /// Undo a prepared (not yet committed) member.
    fn abort(&mut self, member: Self::Member, handle: Self::Handle);
    /// Undo a committed member (unregister).
    fn remove(&mut self, member: Self::Member, handle: Self::Handle);
}

/// Which member failed, and why. Everything prepared before it was undone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanoutError<M, E> {
    /// The member whose prepare failed.
    pub member: M,
    /// Its error.
    pub error: E,
}

/// The members a request is live on, with their handles.
#[derive(Debug)]
pub struct Fanout<M, H> {
    members: Vec<(M, H)>,
}

impl<M: Copy + Eq + core::fmt::Debug, H> Fanout<M, H> {
    /// An empty fan-out (no members yet).
    pub fn empty() -> Self {
        Fanout {
            members: Vec::new(),
        }
    }

    /// Prepare every member, then commit every member. On the first failure,
    /// abort the prepared ones in reverse order and return which failed.
    pub fn register<D>(
        domain: &mut D,
        members: impl IntoIterator<Item = M>,
    ) -> Result<Self, FanoutError<M, D::Error>>
    where
        D: Domain<Member = M, Handle = H>,
    {
        let mut prepared: Vec<(M, H)> = Vec::new();
        for m in members {
            match domain.prepare(m) {
                Ok(h) => prepared.push((m, h)),
                Err(error) => {
                    // Roll back newest first: the reverse of booking order.
                    while let Some((pm, ph)) = prepared.pop() {
                        domain.abort(pm, ph);
                    }
                    return Err(FanoutError { member: m, error });
                }
            }
        }
        // Commit only after every member fit: no half-done request is ever live.
        for (m, h) in prepared.iter_mut() {
            domain.commit(*m, h);
        }
        Ok(Fanout { members: prepared })
    }

    /// A member joined the domain (CPU online, new thread): prepare and commit
    /// it alone. On error nothing changes and the caller learns why.
    pub fn join<D>(&mut self, domain: &mut D, member: M) -> Result<(), D::Error>
    where
        D: Domain<Member = M, Handle = H>,
    {
        if self.contains(member) {
            return Ok(());
        }
        let mut h = domain.prepare(member)?;
        domain.commit(member, &mut h);
        self.members.push((member, h));
        Ok(())
    }

    /// A member left the domain: undo it there. Returns whether it was a member.
    pub fn leave<D>(&mut self, domain: &mut D, member: M) -> bool
    where
        D: Domain<Member = M, Handle = H>,
    {
        match self.members.iter().position(|(m, _)| *m == member) {
            Some(i) => {
                let (m, h) = self.members.swap_remove(i);
                domain.remove(m, h);
                true
            }
            None => false,
        }
    }

    /// Forget a member without calling the domain (it is already gone, e.g. a
    /// thread that exited and took its event with it). Returns its handle.
    pub fn forget(&mut self, member: M) -> Option<H> {
        let i = self.members.iter().position(|(m, _)| *m == member)?;
        Some(self.members.swap_remove(i).1)
    }

    /// Undo every member (unregister).
    pub fn remove_all<D>(&mut self, domain: &mut D)
    where
        D: Domain<Member = M, Handle = H>,
    {
        while let Some((m, h)) = self.members.pop() {
            domain.remove(m, h);
        }
    }

    /// Whether `member` is live.
    pub fn contains(&self, member: M) -> bool {
        self.members.iter().any(|(m, _)| *m == member)
    }

    /// The live members and their handles.
    pub fn members(&self) -> impl Iterator<Item = &(M, H)> + Clone {
        self.members.iter()
    }

    /// Mutable access to the handles (e.g. to modify every member in place).
    pub fn members_mut(&mut self) -> impl Iterator<Item = &mut (M, H)> {
        self.members.iter_mut()
    }

    /// How many members are live.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether no member is live.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// A domain that records every call and refuses members listed in `full`.
    #[derive(Default)]
    struct Log {
        full: Vec<u32>,
        calls: Vec<(&'static str, u32)>,
    }

    impl Domain for Log {
        type Member = u32;
        type Handle = u32;
        type Error = &'static str;
        fn prepare(&mut self, m: u32) -> Result<u32, &'static str> {
            if self.full.contains(&m) {
                return Err("full");
            }
            self.calls.push(("prepare", m));
            Ok(m * 10)
        }
        fn commit(&mut self, m: u32, _h: &mut u32) {
            self.calls.push(("commit", m));
        }
        fn abort(&mut self, m: u32, h: u32) {
            assert_eq!(h, m * 10);
            self.calls.push(("abort", m));
        }
        fn remove(&mut self, m: u32, _h: u32) {
            self.calls.push(("remove", m));
        }
    }

    #[test]
    fn register_commits_only_after_every_member_prepared() {
        let mut d = Log::default();
        let f = Fanout::register(&mut d, 0..3).unwrap();
        assert_eq!(f.len(), 3);
        let first_commit = d.calls.iter().position(|c| c.0 == "commit").unwrap();
        assert!(d.calls[..first_commit].iter().all(|c| c.0 == "prepare"));
        assert_eq!(first_commit, 3);
    }

    #[test]
    fn register_rolls_back_in_reverse_when_member_k_is_full() {
        for k in 0..4u32 {
            let mut d = Log {
                full: vec![k],
                ..Default::default()
            };
            let e = Fanout::<u32, u32>::register(&mut d, 0..4).unwrap_err();
            assert_eq!(
                e,
                FanoutError {
                    member: k,
                    error: "full"
                }
            );
            let aborts: Vec<u32> = d
                .calls
                .iter()
                .filter(|c| c.0 == "abort")
                .map(|c| c.1)
                .collect();
            let expect: Vec<u32> = (0..k).rev().collect();
            assert_eq!(aborts, expect, "k={k}");
            assert!(d.calls.iter().all(|c| c.0 != "commit"), "k={k}");
        }
    }

    #[test]
    fn join_failure_changes_nothing_and_leave_removes() {
        let mut d = Log::default();
        let mut f = Fanout::register(&mut d, [0, 1]).unwrap();
        d.full.push(7);
        assert_eq!(f.join(&mut d, 7), Err("full"));
        assert_eq!(f.len(), 2);
        f.join(&mut d, 2).unwrap();
        f.join(&mut d, 2).unwrap(); // idempotent
        assert_eq!(f.len(), 3);
        assert!(f.leave(&mut d, 1));
        assert!(!f.leave(&mut d, 1));
        assert_eq!(f.forget(2), Some(20));
        f.remove_all(&mut d);
        assert!(f.is_empty());
        assert_eq!(d.calls.iter().filter(|c| c.0 == "remove").count(), 2);
    }
}
