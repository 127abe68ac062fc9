//! The pure on-disk format of a chunk file: what the bytes mean, where each piece lives,
//! which copy of a block a reader gets and a writer overwrites, and how blocks group into
//! slot runs. Everything here is a plain function of its inputs; this module must never do
//! I/O, take a lock or know about the cache.
//!
//! ```text
//! header  4096 B   magic "MOSCHNK1" | format u32 (= 3; 2 still read and written) | chunk id u64 | version u64
//!                  | blocks u32 | BLAKE3 of the 32 bytes before it [32]  (little-endian)
//! table   blocks × 2 × 64 B, padded to a 4 KiB multiple; entry (b, c) of copy c of block b
//!         at table + (2b + c) × 64:
//!                  stored length u32 | BLAKE3 of the stored bytes [32] | version u64 | zero
//!                  (version 0 = copy never written; length 0 at a version = cleared hole)
//! slots   2 × blocks × STRIDE B, copy c of block b at slots + (c × blocks + b) × STRIDE
//!         (copy-major, so a run of blocks whose current copy is the same is one contiguous
//!         read); STRIDE = MAX_SEALED_BLOCK rounded up to 4 KiB (68 KiB) in format 3,
//!         exactly MAX_SEALED_BLOCK in format 2
//! ```
//!
//! Format 3 aligns every slot to 4 KiB so that slot runs can be read and written with
//! O_DIRECT: straight between the disk and a reused aligned buffer, one request per run of
//! consecutive slots, never through the page cache (whose fresh pages cost more than the
//! disk on the machines this runs on). Headers and tables stay buffered (a second, plain
//! descriptor): they are small, hot and written in pieces smaller than a page. Format-2
//! files (unaligned slots) are still read and written, with buffered I/O; new files are
//! format 3. A filesystem that refuses O_DIRECT gets buffered I/O for everything.
//!
//! Two copies per block: a write never overwrites the newest copy at or below the chunk's
//! committed version (the `base` the write carries), only the other copy; a read asks for the
//! newest copy at or below the committed version. So a write that never reaches its quorum
//! and is never committed is never visible, and a copy a reader may need is never being
//! rewritten. The header version is the newest version written (only grows).
//!
//! Files are sparse: holes and unused copies cost no disk. Write order is slots, then table,
//! then header version, so a write torn by a crash leaves a table entry whose checksum does
//! not match its slot (detected on read, never served) or a version that is still the old one
//! (the master then treats the replica as stale).

use crate::aligned::PAGE;
use common::ChunkId;
use common::Version;
use common::block::{MAX_SEALED_BLOCK, SEAL_OVERHEAD};
use common::rpc::MAX_BLOCKS_PER_REQUEST;

/// File magic; the trailing digit is the layout generation.
pub const MAGIC: &[u8; 8] = b"MOSCHNK1";

/// Header format number of new files, for changes within the same magic. 3: slots padded
/// to 4 KiB for O_DIRECT. 2: two copies per block with a version each, slots packed (still
/// read and written). 1 had one copy, overwritten in place; no deployment ever used it.
pub const FORMAT: u32 = 3;

/// The previous format: slots of exactly [`SLOT_LEN`] bytes, not aligned.
pub const FORMAT_PACKED: u32 = 2;

/// Copies kept of every block: the committed one and the one being written.
pub(super) const COPIES: u64 = 2;

/// The header takes one 4 KiB page so that a header update never shares a page (or a
/// sector) with table entries.
pub const HEADER_LEN: u64 = 4096;

/// Bytes of header fields covered by the header checksum.
pub(super) const HEADER_FIELDS: usize = 32;

/// Fields plus their checksum: the part of the header page that is ever written.
pub(super) const HEADER_USED: usize = HEADER_FIELDS + 32;

/// One table entry. 64 B divides every sector size, so an entry is never torn across two.
pub const ENTRY_LEN: u64 = 64;

/// One block slot: room for the largest sealed block.
pub const SLOT_LEN: u64 = MAX_SEALED_BLOCK as u64;

/// Table and slots start on 4 KiB boundaries, matching the page size.
pub(super) const ALIGN: u64 = PAGE as u64;

/// Distance between slots in format 3: a slot rounded up to whole pages, so that every
/// slot starts on a page and a run of slots is one aligned O_DIRECT request.
pub const SLOT_STRIDE: u64 = SLOT_LEN.next_multiple_of(ALIGN);

/// A slot run is cut where it would read (or write) more than this many unused bytes of
/// slot tail between two blocks (short blocks): at ~2 GB/s 32 KiB cost ~16 µs, about one
/// extra request's overhead, so longer gaps are cheaper skipped than transferred. Full
/// blocks leave a 4055-byte tail and never cut a run.
pub(super) const MAX_RUN_GAP: u64 = 32 * 1024;

/// The most blocks a chunk file may have: 2^16 blocks of 64 KiB = 4 GiB chunks, far above
/// the 64 MiB default. Bounds what a damaged header can make us compute or allocate.
pub const MAX_BLOCKS_PER_CHUNK: u32 = 1 << 16;

/// The fixed part of a chunk file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Header {
    pub(super) chunk: ChunkId,
    pub(super) version: Version,
    pub(super) blocks: u32,
    /// [`FORMAT`] or [`FORMAT_PACKED`].
    pub(super) format: u32,
}

impl Header {
    pub(super) fn encode(&self) -> [u8; HEADER_USED] {
        let mut out = [0u8; HEADER_USED];
        out[0..8].copy_from_slice(MAGIC);
        out[8..12].copy_from_slice(&self.format.to_le_bytes());
        out[12..20].copy_from_slice(&self.chunk.0.to_le_bytes());
        out[20..28].copy_from_slice(&self.version.0.to_le_bytes());
        out[28..32].copy_from_slice(&self.blocks.to_le_bytes());
        let sum = blake3::hash(&out[..HEADER_FIELDS]);
        out[HEADER_FIELDS..].copy_from_slice(sum.as_bytes());
        out
    }

    /// Parses and checks a header read from the file that should hold `expect`.
    pub(super) fn decode(raw: &[u8; HEADER_USED], expect: ChunkId) -> Result<Header, String> {
        if &raw[0..8] != MAGIC {
            return Err("not a chunk file (bad magic)".into());
        }
        if blake3::hash(&raw[..HEADER_FIELDS]).as_bytes() != &raw[HEADER_FIELDS..] {
            return Err("header checksum mismatch".into());
        }
        let format = u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]]);
        if format != FORMAT && format != FORMAT_PACKED {
            return Err(format!("unknown chunk file format {format}"));
        }
        let chunk = ChunkId(u64_at(raw, 12));
        let version = Version(u64_at(raw, 20));
        let blocks = u32::from_le_bytes([raw[28], raw[29], raw[30], raw[31]]);
        if chunk != expect {
            return Err(format!("header names chunk {chunk:?}"));
        }
        if blocks == 0 || blocks > MAX_BLOCKS_PER_CHUNK {
            return Err(format!("header claims {blocks} blocks"));
        }
        Ok(Header {
            chunk,
            version,
            blocks,
            format,
        })
    }

    /// A new chunk file's header, in the current format.
    pub(super) fn new(chunk: ChunkId, version: Version, blocks: u32) -> Header {
        Header {
            chunk,
            version,
            blocks,
            format: FORMAT,
        }
    }

    /// Bytes from one slot to the next.
    pub(super) fn stride(&self) -> u64 {
        if self.format == FORMAT_PACKED {
            SLOT_LEN
        } else {
            SLOT_STRIDE
        }
    }

    /// Offset of the entry of copy `copy` of `block`; both copies' entries are adjacent.
    pub(super) fn entry_offset(&self, block: u32, copy: usize) -> u64 {
        HEADER_LEN + (u64::from(block) * COPIES + copy as u64) * ENTRY_LEN
    }

    pub(super) fn slots_offset(&self) -> u64 {
        HEADER_LEN + (u64::from(self.blocks) * COPIES * ENTRY_LEN).next_multiple_of(ALIGN)
    }

    pub(super) fn slot_offset(&self, block: u32, copy: usize) -> u64 {
        self.slots_offset()
            + (copy as u64 * u64::from(self.blocks) + u64::from(block)) * self.stride()
    }

    pub(super) fn file_len(&self) -> u64 {
        self.slots_offset() + COPIES * u64::from(self.blocks) * self.stride()
    }
}

fn u64_at(raw: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&raw[at..at + 8]);
    u64::from_le_bytes(b)
}

/// One block table entry: one copy of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(super) struct Entry {
    /// Stored length; 0 = hole (cleared at `version`, or never written).
    pub(super) len: u32,
    pub(super) sum: [u8; 32],
    /// The write that stored this copy; 0 = never written.
    pub(super) version: Version,
}

impl Entry {
    pub(super) fn for_block(block: &[u8], version: Version) -> Entry {
        Entry {
            // Bounded by MAX_SEALED_BLOCK in validation.
            len: block.len() as u32,
            sum: common::block::checksum(block),
            version,
        }
    }

    pub(super) fn encode(&self) -> [u8; ENTRY_LEN as usize] {
        let mut out = [0u8; ENTRY_LEN as usize];
        out[0..4].copy_from_slice(&self.len.to_le_bytes());
        out[4..36].copy_from_slice(&self.sum);
        out[36..44].copy_from_slice(&self.version.0.to_le_bytes());
        out
    }

    pub(super) fn decode(raw: &[u8]) -> Result<Entry, String> {
        let len = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
        if len != 0 && !(SEAL_OVERHEAD..=MAX_SEALED_BLOCK).contains(&(len as usize)) {
            return Err(format!("table entry claims a block of {len} bytes"));
        }
        let mut sum = [0u8; 32];
        sum.copy_from_slice(&raw[4..36]);
        let version = Version(u64_at(raw, 36));
        if version.0 == 0 && len != 0 {
            return Err("table entry holds a block but no version".into());
        }
        Ok(Entry { len, sum, version })
    }
}

/// The copy of a block a reader at committed version `max` gets: the newest written copy at
/// or below `max`. `None`: the block was never written at or below it (a hole).
pub(super) fn pick_read(copies: &[Entry; 2], max: Version) -> Option<usize> {
    (0..2)
        .filter(|&c| copies[c].version.0 > 0 && copies[c].version <= max)
        .max_by_key(|&c| copies[c].version)
}

/// The copy a write on top of committed version `base` overwrites: never the one a reader
/// at `base` gets (`pick_read`), so that copy stays intact until the write commits. When no
/// copy is at or below `base`, both are uncommitted leftovers: the older one goes.
pub(super) fn pick_write(copies: &[Entry; 2], base: Version) -> usize {
    match pick_read(copies, base) {
        Some(keep) => 1 - keep,
        None if copies[1].version < copies[0].version => 1,
        None => 0,
    }
}

/// A run of consecutive blocks whose slots are consecutive (same copy): one I/O request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Run {
    /// Index of the run's first block among the request's blocks.
    pub(super) start: usize,
    /// One past the last.
    pub(super) end: usize,
    pub(super) copy: usize,
}

/// The copy and stored length of a block whose slot is read or written; `None`: no slot I/O.
pub(super) type SlotIo = Option<(usize, u32)>;

/// Groups blocks into slot runs. `slots[k]` is the copy and stored length of block k, or
/// `None` when block k needs no slot I/O (a hole, or a block cleared by the write). A run
/// is cut where the copy changes, at a block without I/O, and after a block whose unused
/// slot tail exceeds [`MAX_RUN_GAP`], and after [`MAX_BLOCKS_PER_REQUEST`] blocks (the most
/// a pooled buffer holds).
pub(super) fn plan_runs(slots: &[SlotIo], stride: u64) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    let mut open = false;
    for (k, slot) in slots.iter().enumerate() {
        let Some((copy, _)) = *slot else {
            open = false;
            continue;
        };
        let extends =
            open && runs.last().is_some_and(|r| {
                r.copy == copy && r.end - r.start < MAX_BLOCKS_PER_REQUEST as usize
            }) && slots[k - 1].is_some_and(|(_, len)| {
                stride.saturating_sub(u64::from(len).next_multiple_of(ALIGN)) <= MAX_RUN_GAP
            });
        match runs.last_mut() {
            Some(run) if extends => run.end = k + 1,
            _ => runs.push(Run {
                start: k,
                end: k + 1,
                copy,
            }),
        }
        open = true;
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(version: u64) -> Entry {
        Entry {
            len: 10,
            sum: [0; 32],
            version: Version(version),
        }
    }

    #[test]
    fn copy_choice_table() {
        let none = Entry::default();
        // (copies, reader's committed version) -> copy served
        let reads = [
            ([none, none], 5, None),
            ([copy(3), none], 5, Some(0)),
            ([copy(3), copy(4)], 5, Some(1)),
            ([copy(3), copy(6)], 5, Some(0)),
            ([copy(7), copy(6)], 5, None),
            ([copy(5), copy(3)], 5, Some(0)),
        ];
        for (copies, max, want) in reads {
            assert_eq!(
                pick_read(&copies, Version(max)),
                want,
                "{copies:?} at {max}"
            );
        }
        // (copies, write's base) -> copy overwritten: never the one a reader at base gets.
        let writes = [
            ([none, none], 0, 0),
            ([copy(3), none], 3, 1),
            ([copy(3), copy(4)], 3, 1),
            ([copy(3), copy(4)], 4, 0),
            // Both newer than the base (failed writes): the older leftover goes.
            ([copy(7), copy(6)], 5, 1),
            ([copy(6), copy(7)], 5, 0),
            // A copied-in replica (copy 0 at 6) under a late write on top of 5.
            ([copy(6), none], 5, 1),
        ];
        for (copies, base, want) in writes {
            assert_eq!(
                pick_write(&copies, Version(base)),
                want,
                "{copies:?} on {base}"
            );
            if let Some(kept) = pick_read(&copies, Version(base)) {
                assert_ne!(kept, want);
            }
        }
    }

    #[test]
    fn slot_run_table() {
        let full = MAX_SEALED_BLOCK as u32;
        let short = 1000u32; // leaves 64 KiB of unused tail in a format-3 slot
        let run = |start, end, copy| Run { start, end, copy };
        let cases: Vec<(Vec<SlotIo>, Vec<Run>)> = vec![
            (vec![], vec![]),
            (vec![None, None], vec![]),
            (vec![Some((0, full)); 4], vec![run(0, 4, 0)]),
            // A copy change or a block without I/O cuts the run.
            (
                vec![Some((0, full)), Some((1, full)), Some((1, full))],
                vec![run(0, 1, 0), run(1, 3, 1)],
            ),
            (
                vec![Some((0, full)), None, Some((0, full))],
                vec![run(0, 1, 0), run(2, 3, 0)],
            ),
            // A short block ends a run only when it is not the run's last.
            (
                vec![Some((0, full)), Some((0, short)), Some((0, full))],
                vec![run(0, 2, 0), run(2, 3, 0)],
            ),
            (
                vec![Some((0, full)), Some((0, full)), Some((0, short))],
                vec![run(0, 3, 0)],
            ),
            // A tail of up to MAX_RUN_GAP is read through.
            (
                vec![Some((1, full - 32 * 1024)), Some((1, full))],
                vec![run(0, 2, 1)],
            ),
        ];
        for (slots, want) in cases {
            assert_eq!(plan_runs(&slots, SLOT_STRIDE), want, "{slots:?}");
        }
        // A run never outgrows a pooled buffer.
        let long = vec![Some((0, full)); MAX_BLOCKS_PER_REQUEST as usize + 1];
        let max = MAX_BLOCKS_PER_REQUEST as usize;
        assert_eq!(
            plan_runs(&long, SLOT_STRIDE),
            vec![run(0, max, 0), run(max, max + 1, 0)]
        );
        // Packed (format 2) slots: full blocks run through too.
        assert_eq!(
            plan_runs(&[Some((0, full)); 3], SLOT_LEN),
            vec![run(0, 3, 0)]
        );
    }
}
