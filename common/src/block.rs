//! The sealed block format, data keys and key derivation.
//!
//! A file is cut into chunks; a chunk into 64 KiB blocks. The client seals every block with
//! AES-256-GCM before it leaves the process:
//!
//! ```text
//! sealed block = format:u8 (=1) | key_id:u32 LE | version:u64 LE | nonce:[u8;12] | ciphertext | tag:[u8;16]
//! AAD          = "mosaicfs-block-v1" | chunk_id:u64 LE | block_index:u32 LE | key_id | version
//! chunk key    = BLAKE3 derive_key("MosaicFS 2026-11 chunk key v1", data_key[key_id] | chunk_id LE)
//! ```
//!
//! The AAD binds a block to its chunk, position, key and write version, so a chunkserver
//! cannot swap, move or relabel blocks without the tag failing. A fresh random nonce per
//! seal; per-chunk keys keep the number of nonces per key far below the GCM birthday bound.
//! Chunkservers store sealed blocks as opaque bytes and add a BLAKE3 checksum of their own.

use crate::{ChunkId, FsError, FsResult, Version};
// ring's AES-GCM (already linked for TLS) rather than the aes-gcm crate: the same
// AES-256-GCM, so sealed blocks are byte for byte the same, but its VAES/VPCLMULQDQ code
// seals about six times as many bytes per CPU second (client profile, session 3:
// polyval + aes were a fifth of the mount's CPU in a 1 GiB write).
use bytes::{BufMut, Bytes, BytesMut};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use std::collections::BTreeMap;
use std::path::Path;

/// Plaintext bytes per block. 64 KiB: large enough that per-block costs (a tag, a checksum,
/// a table entry) are under 0.1%, small enough that a 4 KiB random write rewrites little.
pub const BLOCK_SIZE: usize = 64 * 1024;
const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Bytes before the ciphertext.
pub const HEADER_LEN: usize = 1 + 4 + 8 + NONCE_LEN;
/// Bytes a sealed block adds to its plaintext.
pub const SEAL_OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// The largest sealed block a chunkserver accepts.
pub const MAX_SEALED_BLOCK: usize = BLOCK_SIZE + SEAL_OVERHEAD;
const AAD_PREFIX: &[u8] = b"mosaicfs-block-v1";
const CHUNK_KEY_CONTEXT: &str = "MosaicFS 2026-11 chunk key v1";
const KEY_CHECK_CONTEXT: &str = "MosaicFS 2026-11 key check value v1";

/// One 256-bit data key with its id.
#[derive(Clone)]
pub struct DataKey {
    pub id: u32,
    key: [u8; 32],
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKey(id {}, <secret>)", self.id)
    }
}

impl DataKey {
    pub fn new(id: u32, key: [u8; 32]) -> DataKey {
        DataKey { id, key }
    }

    pub fn random(id: u32) -> DataKey {
        DataKey {
            id,
            key: rand::random(),
        }
    }

    fn chunk_cipher(&self, chunk: ChunkId) -> LessSafeKey {
        let mut material = [0u8; 40];
        material[..32].copy_from_slice(&self.key);
        material[32..].copy_from_slice(&chunk.0.to_le_bytes());
        let derived = blake3::derive_key(CHUNK_KEY_CONTEXT, &material);
        // A 32-byte key is always valid for AES-256.
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &derived).expect("32-byte AES-256 key"))
    }

    fn hex(&self) -> String {
        self.key.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The keys a client holds: every key id ever used (to read old blocks) and the newest
/// (to seal new ones). File format, one key per line: `<id> <64 hex digits>`; a line of
/// just 64 hex digits is key id 0. `#` starts a comment.
#[derive(Clone, Debug)]
pub struct KeyRing {
    keys: BTreeMap<u32, DataKey>,
}

impl KeyRing {
    pub fn single(key: DataKey) -> KeyRing {
        KeyRing {
            keys: BTreeMap::from([(key.id, key)]),
        }
    }

    pub fn parse(text: &str) -> Result<KeyRing, String> {
        let mut keys = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let (id, hex) = match line.split_once(char::is_whitespace) {
                Some((id, hex)) => (
                    id.parse::<u32>()
                        .map_err(|_| format!("line {}: key id {id:?} is not a number", n + 1))?,
                    hex.trim(),
                ),
                None => (0, line),
            };
            let key = parse_hex32(hex).ok_or_else(|| {
                format!(
                    "line {}: a data key is 64 hex digits (256 bits), found {} characters",
                    n + 1,
                    hex.len()
                )
            })?;
            if keys.insert(id, DataKey::new(id, key)).is_some() {
                return Err(format!("line {}: key id {id} appears twice", n + 1));
            }
        }
        if keys.is_empty() {
            return Err("no data key found (expected 64 hex digits)".into());
        }
        Ok(KeyRing { keys })
    }

    /// Reads a key file, with an error that names the file and the fix.
    pub fn load(path: &Path) -> anyhow::Result<KeyRing> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read key file {}: {e}", path.display()))?;
        let ring = KeyRing::parse(&text).map_err(|e| {
            anyhow::anyhow!(
                "key file {} is not a MosaicFS data key file: {e}; use the key file made by `mosaic-master init`",
                path.display()
            )
        })?;
        // The data key decrypts every file: refused readable by others, as a TLS key is.
        crate::tls::check_secret_file(path, "data key file")?;
        Ok(ring)
    }

    /// The file text for this ring (0600 is the caller's job).
    pub fn to_file_text(&self) -> String {
        let mut out =
            String::from("# MosaicFS data keys: <key id> <256-bit key in hex>. Keep secret.\n");
        for key in self.keys.values() {
            out.push_str(&format!("{} {}\n", key.id, key.hex()));
        }
        out
    }

    /// The key new blocks are sealed with.
    pub fn current(&self) -> &DataKey {
        // Non-empty by construction.
        self.keys
            .values()
            .next_back()
            .expect("key ring is never empty")
    }

    pub fn get(&self, id: u32) -> Option<&DataKey> {
        self.keys.get(&id)
    }

    /// Adds a new key with the next id (rotation).
    pub fn rotate(&mut self) -> u32 {
        let id = self.current().id + 1;
        self.keys.insert(id, DataKey::random(id));
        id
    }

    /// The check value of the cluster's first key: stored by the master so that a client
    /// with another key is refused at mount. It reveals nothing about the key.
    pub fn key_check(&self) -> [u8; 32] {
        let first = self.keys.values().next().expect("key ring is never empty");
        blake3::derive_key(KEY_CHECK_CONTEXT, &first.key)
    }

    /// The check value of key `id` (derived as [`KeyRing::key_check`]), `None` when the
    /// ring lacks it: what `rotate-key` records so a mount can prove it has the current key.
    pub fn check_of(&self, id: u32) -> Option<[u8; 32]> {
        self.keys
            .get(&id)
            .map(|key| blake3::derive_key(KEY_CHECK_CONTEXT, &key.key))
    }

    /// Whether this ring can read everything the cluster writes, given the cluster's current
    /// key (`id` and its check value). An error says which key ids are missing, or that
    /// key `id` is another key than the cluster's (a rotation made on two copies).
    pub fn check_current(&self, id: u32, check: &[u8]) -> Result<(), String> {
        match self.check_of(id) {
            Some(ours) if ours.as_slice() == check => Ok(()),
            Some(_) => Err(format!(
                "key id {id} in this key file is not the cluster's key {id} (its check value \
                 differs: it was rotated on another copy of the key file)"
            )),
            None => {
                let have: Vec<u32> = self.keys.keys().copied().collect();
                let lacking: Vec<u32> = (0..=id).filter(|k| !self.keys.contains_key(k)).collect();
                Err(format!(
                    "this key file lacks key ids {lacking:?} (it has {have:?}; the cluster's \
                     current key is {id}): the key was rotated since this file was copied"
                ))
            }
        }
    }
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn aad(chunk: ChunkId, index: u32, key_id: u32, version: Version) -> [u8; 17 + 8 + 4 + 4 + 8] {
    let mut out = [0u8; 17 + 8 + 4 + 4 + 8];
    out[..17].copy_from_slice(AAD_PREFIX);
    out[17..25].copy_from_slice(&chunk.0.to_le_bytes());
    out[25..29].copy_from_slice(&index.to_le_bytes());
    out[29..33].copy_from_slice(&key_id.to_le_bytes());
    out[33..41].copy_from_slice(&version.0.to_le_bytes());
    out
}

/// Seals one block of plaintext (at most [`BLOCK_SIZE`] bytes).
pub fn seal(key: &DataKey, chunk: ChunkId, index: u32, version: Version, plain: &[u8]) -> Bytes {
    assert!(plain.len() <= BLOCK_SIZE, "block larger than BLOCK_SIZE");
    let cipher = key.chunk_cipher(chunk);
    seal_with(&cipher, key.id, chunk, index, version, plain)
}

/// A chunk's cipher, derived once for many blocks of the same chunk.
pub struct ChunkSealer {
    cipher: LessSafeKey,
    key_id: u32,
    chunk: ChunkId,
}

impl ChunkSealer {
    pub fn new(key: &DataKey, chunk: ChunkId) -> ChunkSealer {
        ChunkSealer {
            cipher: key.chunk_cipher(chunk),
            key_id: key.id,
            chunk,
        }
    }

    pub fn seal(&self, index: u32, version: Version, plain: &[u8]) -> Bytes {
        assert!(plain.len() <= BLOCK_SIZE, "block larger than BLOCK_SIZE");
        seal_with(&self.cipher, self.key_id, self.chunk, index, version, plain)
    }
}

fn seal_with(
    cipher: &LessSafeKey,
    key_id: u32,
    chunk: ChunkId,
    index: u32,
    version: Version,
    plain: &[u8],
) -> Bytes {
    let nonce: [u8; NONCE_LEN] = rand::random();
    let mut out = BytesMut::with_capacity(plain.len() + SEAL_OVERHEAD);
    out.put_u8(FORMAT_V1);
    out.put_u32_le(key_id);
    out.put_u64_le(version.0);
    out.put_slice(&nonce);
    out.put_slice(plain);
    let tag = cipher
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(chunk, index, key_id, version)),
            &mut out[HEADER_LEN..],
        )
        .expect("AES-GCM encryption of a block under 64 GiB cannot fail");
    out.put_slice(tag.as_ref());
    out.freeze()
}

/// The parsed header of a sealed block, readable without a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealedHeader {
    pub key_id: u32,
    pub version: Version,
    pub plain_len: usize,
}

/// Parses a sealed block's header, checking only its shape.
pub fn header(sealed: &[u8]) -> FsResult<SealedHeader> {
    if sealed.len() < SEAL_OVERHEAD || sealed.len() > MAX_SEALED_BLOCK {
        return Err(FsError::Corrupt(format!(
            "sealed block of {} bytes",
            sealed.len()
        )));
    }
    if sealed[0] != FORMAT_V1 {
        return Err(FsError::Corrupt(format!(
            "unknown block format {}",
            sealed[0]
        )));
    }
    let key_id = u32::from_le_bytes(sealed[1..5].try_into().map_err(FsError::internal)?);
    let version = u64::from_le_bytes(sealed[5..13].try_into().map_err(FsError::internal)?);
    Ok(SealedHeader {
        key_id,
        version: Version(version),
        plain_len: sealed.len() - SEAL_OVERHEAD,
    })
}

/// Authenticates and decrypts a sealed block into `out` (cleared first). Fails with
/// `Corrupt` on any tampering: a changed byte, another chunk's or position's block, an
/// unknown key id.
pub fn open_into(
    keys: &KeyRing,
    chunk: ChunkId,
    index: u32,
    sealed: &[u8],
    out: &mut Vec<u8>,
) -> FsResult<SealedHeader> {
    let head = header(sealed)?;
    out.clear();
    out.extend_from_slice(&sealed[HEADER_LEN..sealed.len() - TAG_LEN]);
    open_body(keys, chunk, index, head, sealed, out)?;
    Ok(head)
}

/// [`open_into`] for a block the caller owns: decrypts in place when nobody else holds
/// the buffer (the usual case for a block just received), saving a 64 KiB copy, and
/// returns the plaintext as a view into it.
pub fn open_bytes(
    keys: &KeyRing,
    chunk: ChunkId,
    index: u32,
    sealed: Bytes,
) -> FsResult<(SealedHeader, Bytes)> {
    let head = header(&sealed)?;
    match sealed.try_into_mut() {
        Ok(mut buf) => {
            let (tag_at, len) = (buf.len() - TAG_LEN, buf.len());
            let (front, tag) = buf.split_at_mut(tag_at);
            let (head_bytes, body) = front.split_at_mut(HEADER_LEN);
            open_parts(keys, chunk, index, head, &head_bytes[13..], tag, body)?;
            let mut plain = buf.freeze();
            plain.truncate(len - TAG_LEN);
            Ok((head, plain.slice(HEADER_LEN..)))
        }
        Err(shared) => {
            let mut out = Vec::new();
            open_into(keys, chunk, index, &shared, &mut out)?;
            Ok((head, Bytes::from(out)))
        }
    }
}

/// Decrypts `body` (a copy of the sealed block's ciphertext) in place.
fn open_body(
    keys: &KeyRing,
    chunk: ChunkId,
    index: u32,
    head: SealedHeader,
    sealed: &[u8],
    body: &mut [u8],
) -> FsResult<()> {
    let nonce = &sealed[13..HEADER_LEN];
    let tag = &sealed[sealed.len() - TAG_LEN..];
    open_parts(keys, chunk, index, head, nonce, tag, body)
}

fn open_parts(
    keys: &KeyRing,
    chunk: ChunkId,
    index: u32,
    head: SealedHeader,
    nonce: &[u8],
    tag: &[u8],
    body: &mut [u8],
) -> FsResult<()> {
    let key = keys.get(head.key_id).ok_or_else(|| {
        FsError::Corrupt(format!("block sealed with unknown key id {}", head.key_id))
    })?;
    let cipher = key.chunk_cipher(chunk);
    let failed = || {
        FsError::Corrupt(format!(
            "block {index} of chunk {chunk:?} failed authentication"
        ))
    };
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| failed())?;
    let tag = Tag::try_from(tag).map_err(|_| failed())?;
    cipher
        .open_in_place_separate_tag(
            nonce,
            Aad::from(aad(chunk, index, head.key_id, head.version)),
            tag,
            body,
            0..,
        )
        .map_err(|_| failed())?;
    Ok(())
}

/// Convenience form of [`open_into`].
pub fn open(
    keys: &KeyRing,
    chunk: ChunkId,
    index: u32,
    sealed: &[u8],
) -> FsResult<(SealedHeader, Vec<u8>)> {
    let mut out = Vec::with_capacity(sealed.len());
    let head = open_into(keys, chunk, index, sealed, &mut out)?;
    Ok((head, out))
}

/// The chunkserver's checksum of stored bytes.
pub fn checksum(stored: &[u8]) -> [u8; 32] {
    *blake3::hash(stored).as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ring() -> KeyRing {
        KeyRing::single(DataKey::new(0, [7u8; 32]))
    }

    #[test]
    fn current_key_check_table() {
        let old = KeyRing::single(DataKey::new(0, [1; 32]));
        let mut new = old.clone();
        new.keys.insert(1, DataKey::new(1, [2; 32]));
        let mut forked = old.clone();
        forked.keys.insert(1, DataKey::new(1, [3; 32]));
        let check1 = new.check_of(1).expect("key 1");
        let check0 = old.check_of(0).expect("key 0");
        // (ring, current id, current check, Ok or a word the error must contain)
        type Row<'a> = (&'a KeyRing, u32, [u8; 32], Result<(), &'a str>);
        let table: &[Row] = &[
            (&old, 0, check0, Ok(())),
            (&new, 0, check0, Ok(())),
            (&new, 1, check1, Ok(())),
            (&old, 1, check1, Err("lacks key ids [1]")),
            (&forked, 1, check1, Err("not the cluster's key 1")),
        ];
        for (ring, id, check, want) in table {
            let got = ring.check_current(*id, check);
            match want {
                Ok(()) => assert_eq!(got, Ok(()), "key {id}"),
                Err(word) => {
                    let e = got.expect_err("refused");
                    assert!(e.contains(word), "{e}");
                }
            }
        }
        assert_eq!(old.check_of(1), None);
        // The first key's check value is the one the cluster has always stored.
        assert_eq!(old.check_of(0), Some(old.key_check()));
    }

    #[test]
    fn seal_open_round_trip() {
        let keys = ring();
        let plain = vec![42u8; BLOCK_SIZE];
        let sealed = seal(keys.current(), ChunkId(9), 3, Version(5), &plain);
        assert_eq!(sealed.len(), BLOCK_SIZE + SEAL_OVERHEAD);
        let (head, back) = open(&keys, ChunkId(9), 3, &sealed).expect("opens");
        assert_eq!(back, plain);
        assert_eq!(head.version, Version(5));
        assert_eq!(head.key_id, 0);
    }

    /// The aes-gcm crate sealed blocks before session 3: a block sealed by either opens
    /// with the other, so the format on disk did not change.
    #[test]
    fn format_is_the_standard_aes_256_gcm_of_the_aes_gcm_crate() {
        use aes_gcm::aead::{AeadInPlace, KeyInit};
        let keys = ring();
        let (chunk, index, version) = (ChunkId(77), 5u32, Version(9));
        let mut material = [0u8; 40];
        material[..32].copy_from_slice(&[7u8; 32]);
        material[32..].copy_from_slice(&chunk.0.to_le_bytes());
        let other =
            aes_gcm::Aes256Gcm::new(&blake3::derive_key(CHUNK_KEY_CONTEXT, &material).into());
        let plain: Vec<u8> = (0..BLOCK_SIZE - 3).map(|i| (i * 31 % 251) as u8).collect();

        // Sealed here, opened by the aes-gcm crate.
        let sealed = seal(keys.current(), chunk, index, version, &plain);
        let mut body = sealed[HEADER_LEN..sealed.len() - TAG_LEN].to_vec();
        other
            .decrypt_in_place_detached(
                aes_gcm::Nonce::from_slice(&sealed[13..HEADER_LEN]),
                &aad(chunk, index, 0, version),
                &mut body,
                aes_gcm::Tag::from_slice(&sealed[sealed.len() - TAG_LEN..]),
            )
            .expect("the aes-gcm crate opens a block sealed with ring");
        assert_eq!(body, plain);

        // Sealed by the aes-gcm crate in the old layout, opened here.
        let nonce = [3u8; NONCE_LEN];
        let mut old = vec![FORMAT_V1];
        old.extend_from_slice(&0u32.to_le_bytes());
        old.extend_from_slice(&version.0.to_le_bytes());
        old.extend_from_slice(&nonce);
        let mut body = plain.clone();
        let tag = other
            .encrypt_in_place_detached(
                aes_gcm::Nonce::from_slice(&nonce),
                &aad(chunk, index, 0, version),
                &mut body,
            )
            .expect("seal");
        old.extend_from_slice(&body);
        old.extend_from_slice(&tag);
        let (head, back) = open(&keys, chunk, index, &old).expect("ring opens an aes-gcm block");
        assert_eq!(back, plain);
        assert_eq!(head.version, version);
    }

    #[test]
    fn ciphertext_hides_plaintext() {
        let keys = ring();
        let plain = b"MOSAIC-KNOWN-PLAINTEXT-PATTERN".repeat(100);
        let sealed = seal(keys.current(), ChunkId(1), 0, Version(1), &plain);
        assert!(!sealed.windows(16).any(|w| w == &plain[..16]));
    }

    #[test]
    fn swapped_moved_or_flipped_blocks_fail() {
        let keys = ring();
        let sealed = seal(keys.current(), ChunkId(9), 3, Version(5), b"hello world");
        assert!(open(&keys, ChunkId(10), 3, &sealed).is_err(), "other chunk");
        assert!(
            open(&keys, ChunkId(9), 4, &sealed).is_err(),
            "other position"
        );
        let mut flipped = sealed.to_vec();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(open(&keys, ChunkId(9), 3, &flipped).is_err(), "flipped tag");
        let mut relabeled = sealed.to_vec();
        relabeled[5] ^= 1; // version byte
        assert!(
            open(&keys, ChunkId(9), 3, &relabeled).is_err(),
            "relabeled version"
        );
        let other = KeyRing::single(DataKey::new(0, [8u8; 32]));
        assert!(open(&other, ChunkId(9), 3, &sealed).is_err(), "wrong key");
    }

    #[test]
    fn key_file_parsing() {
        let hex = "ab".repeat(32);
        let ring = KeyRing::parse(&format!("{hex}\n")).expect("bare key");
        assert_eq!(ring.current().id, 0);
        let ring = KeyRing::parse(&format!("# c\n0 {hex}\n1 {}\n", "cd".repeat(32))).expect("ring");
        assert_eq!(ring.current().id, 1);
        assert!(KeyRing::parse("abc").is_err());
        assert!(KeyRing::parse("").is_err());
        assert!(KeyRing::parse(&format!("0 {hex}\n0 {hex}\n")).is_err());
        let text = ring.to_file_text();
        let again = KeyRing::parse(&text).expect("round trip");
        assert_eq!(again.key_check(), ring.key_check());
    }

    #[test]
    fn a_key_file_readable_by_others_is_refused_like_a_tls_key() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("data.key");
        std::fs::write(&path, ring().to_file_text()).expect("write");
        for (mode, ok) in [
            (0o600, true),
            (0o400, true),
            (0o644, false),
            (0o640, false),
            (0o602, false),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let result = KeyRing::load(&path);
            assert_eq!(result.is_ok(), ok, "mode {mode:o}");
            if let Err(e) = result {
                let text = format!("{e:#}");
                assert!(
                    text.contains("accessible by other users") && text.contains("chmod 600"),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn a_key_file_of_the_wrong_length_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in [
            ("short.key", "ab".repeat(31)),
            ("long.key", "ab".repeat(33)),
            ("odd.key", format!("0 {}a\n", "ab".repeat(31))),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            let err = format!("{:#}", KeyRing::load(&path).expect_err(name));
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains("mosaic-master init"), "names the fix: {err}");
        }
    }

    #[test]
    fn rotation_keeps_old_blocks_readable_and_check_value() {
        let mut keys = ring();
        let check = keys.key_check();
        let old = seal(keys.current(), ChunkId(1), 0, Version(1), b"old");
        keys.rotate();
        assert_eq!(keys.current().id, 1);
        assert_eq!(keys.key_check(), check);
        assert_eq!(open(&keys, ChunkId(1), 0, &old).expect("old").1, b"old");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = header(&bytes);
            let _ = open(&ring(), ChunkId(1), 0, &bytes);
        }

        #[test]
        fn arbitrary_key_file_never_panics(text in ".{0,200}") {
            let _ = KeyRing::parse(&text);
        }
    }

    #[test]
    fn open_bytes_decrypts_in_place_or_from_a_shared_buffer() {
        let keys = ring();
        let plain: Vec<u8> = (0..BLOCK_SIZE).map(|i| (i * 7 % 251) as u8).collect();
        let sealed = seal(keys.current(), ChunkId(4), 2, Version(6), &plain);
        // Unique buffer: decrypted in place.
        let unique = Bytes::copy_from_slice(&sealed);
        let (head, got) = open_bytes(&keys, ChunkId(4), 2, unique).expect("open unique");
        assert_eq!(head.version, Version(6));
        assert_eq!(got.as_ref(), plain.as_slice());
        // Shared buffer: the other holder's bytes stay sealed.
        let shared = Bytes::copy_from_slice(&sealed);
        let keep = shared.clone();
        let (_, got) = open_bytes(&keys, ChunkId(4), 2, shared).expect("open shared");
        assert_eq!(got.as_ref(), plain.as_slice());
        assert_eq!(keep.as_ref(), sealed.as_ref());
        // Tampering fails either way.
        let mut bad = sealed.to_vec();
        bad[HEADER_LEN + 100] ^= 1;
        assert!(open_bytes(&keys, ChunkId(4), 2, Bytes::from(bad)).is_err());
        assert!(open_bytes(&keys, ChunkId(4), 3, Bytes::copy_from_slice(&sealed)).is_err());
    }
}
