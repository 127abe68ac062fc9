//! The operation mix of the quorum-DFS client types: which operation comes next and where.
//!
//! Reads and writes are interleaved evenly (not drawn at random) so that every window of 100
//! operations holds exactly the configured share of reads: a short run measures the mix it
//! claims. Which file and which offset are drawn from a seeded generator, so two runs with
//! the same seed touch the same places. Pure: no I/O, no clock.

use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;

/// The mixed client types of the design.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Mix {
    /// 90% reads.
    ReadHeavy,
    /// 90% writes.
    WriteHeavy,
    /// 50/50.
    Balanced,
}

impl Mix {
    pub const ALL: [Mix; 3] = [Mix::ReadHeavy, Mix::WriteHeavy, Mix::Balanced];

    pub fn read_percent(self) -> u32 {
        match self {
            Mix::ReadHeavy => 90,
            Mix::WriteHeavy => 10,
            Mix::Balanced => 50,
        }
    }

    /// The workload's name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Mix::ReadHeavy => "read_heavy",
            Mix::WriteHeavy => "write_heavy",
            Mix::Balanced => "balanced",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Read,
    Write,
}

/// One operation: read or write `len` bytes of file `file` at `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Op {
    pub kind: OpKind,
    pub file: usize,
    pub offset: u64,
}

/// An endless, deterministic sequence of operations over `files` files of `file_size` bytes,
/// each operation `io_size` bytes at an `io_size`-aligned offset.
pub struct MixGen {
    read_percent: u64,
    files: usize,
    slots: u64,
    io_size: u64,
    seq: u64,
    rng: SmallRng,
}

impl MixGen {
    /// `None` when the shape is impossible (no files, or an I/O larger than a file).
    pub fn new(mix: Mix, files: usize, file_size: u64, io_size: u64, seed: u64) -> Option<MixGen> {
        if files == 0 || io_size == 0 || io_size > file_size {
            return None;
        }
        Some(MixGen {
            read_percent: u64::from(mix.read_percent()),
            files,
            slots: file_size / io_size,
            io_size,
            seq: 0,
            rng: SmallRng::seed_from_u64(seed),
        })
    }
}

impl Iterator for MixGen {
    type Item = Op;

    fn next(&mut self) -> Option<Op> {
        let i = self.seq;
        self.seq += 1;
        // Operation i is a read when the running count of reads, floor(i·p/100), steps up:
        // exactly p reads in every 100 consecutive operations, spread evenly.
        let read = (i + 1) * self.read_percent / 100 > i * self.read_percent / 100;
        Some(Op {
            kind: if read { OpKind::Read } else { OpKind::Write },
            file: self.rng.gen_range(0..self.files),
            offset: self.rng.gen_range(0..self.slots) * self.io_size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(mix: Mix, n: usize) -> String {
        MixGen::new(mix, 4, 1 << 20, 4096, 1)
            .expect("valid shape")
            .take(n)
            .map(|op| match op.kind {
                OpKind::Read => 'r',
                OpKind::Write => 'w',
            })
            .collect()
    }

    #[test]
    fn reads_are_spread_evenly_at_the_exact_share() {
        assert_eq!(kinds(Mix::Balanced, 10), "wrwrwrwrwr");
        assert_eq!(kinds(Mix::ReadHeavy, 10), "wrrrrrrrrr");
        assert_eq!(kinds(Mix::WriteHeavy, 10), "wwwwwwwwwr");
        for mix in Mix::ALL {
            let all = kinds(mix, 1000);
            for window in 0..10 {
                let reads = all[window * 100..(window + 1) * 100]
                    .chars()
                    .filter(|&c| c == 'r')
                    .count();
                assert_eq!(reads as u32, mix.read_percent(), "{mix:?} window {window}");
            }
        }
    }

    #[test]
    fn places_are_in_range_aligned_and_repeatable() {
        let a: Vec<Op> = MixGen::new(Mix::Balanced, 3, 10 * 4096 + 100, 4096, 7)
            .expect("valid shape")
            .take(500)
            .collect();
        for op in &a {
            assert!(op.file < 3);
            assert_eq!(op.offset % 4096, 0);
            // The last whole slot ends inside the file: never a read past the end.
            assert!(op.offset + 4096 <= 10 * 4096 + 100);
        }
        assert!(
            (0..3).all(|f| a.iter().any(|op| op.file == f)),
            "every file used"
        );
        let b: Vec<Op> = MixGen::new(Mix::Balanced, 3, 10 * 4096 + 100, 4096, 7)
            .expect("valid shape")
            .take(500)
            .collect();
        assert_eq!(a, b, "same seed, same sequence");
    }

    #[test]
    fn impossible_shapes_are_refused() {
        assert!(MixGen::new(Mix::Balanced, 0, 4096, 4096, 1).is_none());
        assert!(MixGen::new(Mix::Balanced, 1, 4096, 8192, 1).is_none());
        assert!(MixGen::new(Mix::Balanced, 1, 4096, 0, 1).is_none());
    }
}
