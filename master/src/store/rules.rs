//! POSIX rules that do not depend on the database: name and xattr validation, the mode and
//! group of a new inode, setuid/setgid clearing. Every metadata engine applies these same
//! functions, so the semantics cannot drift between engines. Pure and table-tested.

use common::FsError;
use common::types::{
    Attr, FileKind, NAME_MAX, NewNode, SYMLINK_MAX, XATTR_NAME_MAX, XATTR_SIZE_MAX,
};

const S_ISUID: u16 = 0o4000;
const S_ISGID: u16 = 0o2000;
const S_IXGRP: u16 = 0o0010;
const PERM_MASK: u32 = 0o7777;

/// Hard links per inode, as ext4's EXT4_LINK_MAX.
pub const LINK_MAX: u32 = 65_000;

/// Checks a directory entry name: any bytes but `/` and NUL, 1..=255 of them.
pub fn check_name(name: &[u8]) -> Result<(), FsError> {
    if name.is_empty() {
        return Err(FsError::Invalid("empty file name".into()));
    }
    if name.contains(&b'/') || name.contains(&0) {
        return Err(FsError::Invalid(
            "a file name may not contain '/' or NUL".into(),
        ));
    }
    if name.len() > NAME_MAX {
        return Err(FsError::NameTooLong);
    }
    Ok(())
}

/// `.` or `..`: never stored, the client synthesizes them.
pub fn is_dot(name: &[u8]) -> bool {
    name == b"." || name == b".."
}

/// Checks a symlink target: non-empty (Linux answers ENOENT) and at most PATH_MAX bytes.
pub fn check_symlink_target(target: Option<&[u8]>) -> Result<&[u8], FsError> {
    let target = target.ok_or_else(|| FsError::Invalid("symlink without a target".into()))?;
    if target.is_empty() {
        return Err(FsError::NotFound);
    }
    if target.len() > SYMLINK_MAX {
        return Err(FsError::NameTooLong);
    }
    if target.contains(&0) {
        return Err(FsError::Invalid("symlink target contains NUL".into()));
    }
    Ok(target)
}

/// Checks an xattr name: one of the namespaces we store, a non-empty suffix, at most 255
/// bytes. `system.*` (ACLs) is not supported: the kernel's default_permissions would not
/// enforce stored ACLs, so accepting them would be a lie.
pub fn check_xattr_name(name: &[u8]) -> Result<(), FsError> {
    if name.is_empty() {
        return Err(FsError::Invalid("empty attribute name".into()));
    }
    if name.len() > XATTR_NAME_MAX {
        return Err(FsError::Range);
    }
    let suffix = [&b"user."[..], b"trusted.", b"security."]
        .into_iter()
        .find_map(|prefix| name.strip_prefix(prefix))
        .ok_or(FsError::NotSupported)?;
    if suffix.is_empty() {
        return Err(FsError::Invalid(
            "attribute name has an empty suffix".into(),
        ));
    }
    if name.contains(&0) {
        return Err(FsError::Invalid("attribute name contains NUL".into()));
    }
    Ok(())
}

pub fn check_xattr_value(value: &[u8]) -> Result<(), FsError> {
    if value.len() > XATTR_SIZE_MAX {
        return Err(FsError::TooBig);
    }
    Ok(())
}

/// The permission bits and group of a new inode in `parent`: the umask applies, a setgid
/// parent passes its group on, and a new directory under it inherits the setgid bit.
pub fn new_owner(node: &NewNode, parent: &Attr) -> (u16, u32, u32) {
    let setgid_parent = parent.perm & S_ISGID != 0;
    let mut perm = if node.kind == FileKind::Symlink {
        0o777
    } else {
        (u32::from(node.perm) & !u32::from(node.umask) & PERM_MASK) as u16
    };
    if node.kind == FileKind::Dir && setgid_parent {
        perm |= S_ISGID;
    }
    let gid = if setgid_parent {
        parent.gid
    } else {
        node.caller.gid
    };
    (perm, node.caller.uid, gid)
}

/// Mode bits from a chmod: permission bits only, the kind never changes.
pub fn chmod_bits(mode: u32) -> u16 {
    (mode & PERM_MASK) as u16
}

/// What a write by a non-owner (or chown) does to the mode, as Linux: setuid always goes;
/// setgid only with group-execute (without it, setgid marks mandatory locking, not privilege).
pub fn clear_suid(perm: u16) -> u16 {
    let mut perm = perm & !S_ISUID;
    if perm & S_IXGRP != 0 {
        perm &= !S_ISGID;
    }
    perm
}

/// Whether a setattr is a chown that clears setuid/setgid: uid or gid given, no explicit
/// mode, and not a directory (directories keep setgid for inheritance).
pub fn chown_clears_suid(
    kind: FileKind,
    uid: Option<u32>,
    gid: Option<u32>,
    mode: Option<u32>,
) -> bool {
    (uid.is_some() || gid.is_some()) && mode.is_none() && kind != FileKind::Dir
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::InodeId;
    use common::types::{Caller, Timespec};

    fn dir(perm: u16, gid: u32) -> Attr {
        Attr {
            ino: InodeId(7),
            kind: FileKind::Dir,
            perm,
            uid: 0,
            gid,
            size: 0,
            nlink: 2,
            atime: Timespec::default(),
            mtime: Timespec::default(),
            ctime: Timespec::default(),
            rdev: 0,
        }
    }

    fn node(kind: FileKind, perm: u16, umask: u16) -> NewNode {
        NewNode {
            kind,
            perm,
            umask,
            rdev: 0,
            symlink_target: None,
            caller: Caller {
                uid: 1000,
                gid: 100,
                pid: 1,
            },
        }
    }

    #[test]
    fn names() {
        let long = vec![b'a'; NAME_MAX + 1];
        let max = vec![b'a'; NAME_MAX];
        let table: &[(&[u8], Option<FsError>)] = &[
            (b"ok", None),
            (b"\xff\xfe not utf8", None),
            (&max, None),
            (b"", Some(FsError::Invalid(String::new()))),
            (b"a/b", Some(FsError::Invalid(String::new()))),
            (b"a\0b", Some(FsError::Invalid(String::new()))),
            (&long, Some(FsError::NameTooLong)),
        ];
        for (name, want) in table {
            let got = check_name(name).err();
            assert_eq!(
                got.map(|e| std::mem::discriminant(&e)),
                want.clone().map(|e| std::mem::discriminant(&e)),
                "{name:?}"
            );
        }
    }

    #[test]
    fn xattr_names() {
        let long = [b"user.".to_vec(), vec![b'x'; XATTR_NAME_MAX]].concat();
        let table: &[(&[u8], Result<(), FsError>)] = &[
            (b"user.a", Ok(())),
            (b"trusted.b", Ok(())),
            (b"security.selinux", Ok(())),
            (b"system.posix_acl_access", Err(FsError::NotSupported)),
            (b"other.x", Err(FsError::NotSupported)),
            (b"", Err(FsError::Invalid("empty attribute name".into()))),
            (&long, Err(FsError::Range)),
            (
                b"user.",
                Err(FsError::Invalid(
                    "attribute name has an empty suffix".into(),
                )),
            ),
        ];
        for (name, want) in table {
            assert_eq!(
                &check_xattr_name(name),
                want,
                "{:?}",
                String::from_utf8_lossy(name)
            );
        }
        assert_eq!(check_xattr_value(&vec![0; XATTR_SIZE_MAX]), Ok(()));
        assert_eq!(
            check_xattr_value(&vec![0; XATTR_SIZE_MAX + 1]),
            Err(FsError::TooBig)
        );
    }

    #[test]
    fn symlink_targets() {
        assert_eq!(check_symlink_target(Some(b"x")), Ok(&b"x"[..]));
        assert_eq!(check_symlink_target(Some(b"")), Err(FsError::NotFound));
        assert_eq!(
            check_symlink_target(Some(&vec![b'a'; SYMLINK_MAX + 1])),
            Err(FsError::NameTooLong)
        );
        assert!(check_symlink_target(Some(&vec![b'a'; SYMLINK_MAX])).is_ok());
        assert!(matches!(
            check_symlink_target(None),
            Err(FsError::Invalid(_))
        ));
    }

    #[test]
    fn new_inode_owner_and_mode() {
        // (kind, requested perm, umask, parent perm, parent gid) -> (perm, uid, gid)
        let table = [
            (FileKind::File, 0o666, 0o022, 0o755, 5, (0o644, 1000, 100)),
            (FileKind::File, 0o7777, 0, 0o755, 5, (0o7777, 1000, 100)),
            (FileKind::Dir, 0o777, 0o027, 0o755, 5, (0o750, 1000, 100)),
            // setgid parent: its group passes on; a new directory inherits setgid.
            (FileKind::File, 0o644, 0, 0o2775, 5, (0o644, 1000, 5)),
            (FileKind::Dir, 0o755, 0, 0o2775, 5, (0o2755, 1000, 5)),
            // symlinks are always 0777.
            (
                FileKind::Symlink,
                0o600,
                0o077,
                0o755,
                5,
                (0o777, 1000, 100),
            ),
        ];
        for (kind, perm, umask, pperm, pgid, want) in table {
            assert_eq!(
                new_owner(&node(kind, perm, umask), &dir(pperm, pgid)),
                want,
                "{kind:?} {perm:o} {umask:o} {pperm:o}"
            );
        }
    }

    #[test]
    fn suid_clearing() {
        let table = [
            (0o4755, 0o0755),
            (0o2755, 0o0755),
            (0o2715, 0o0715),
            (0o6775, 0o0775),
            (0o2645, 0o2645), // no group-execute: setgid stays
            (0o0644, 0o0644),
        ];
        for (before, after) in table {
            assert_eq!(clear_suid(before), after, "{before:o}");
        }
        assert!(chown_clears_suid(FileKind::File, Some(1), None, None));
        assert!(!chown_clears_suid(FileKind::Dir, Some(1), None, None));
        assert!(!chown_clears_suid(
            FileKind::File,
            Some(1),
            None,
            Some(0o4755)
        ));
        assert!(!chown_clears_suid(FileKind::File, None, None, None));
    }
}
