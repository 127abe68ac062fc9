//! Which role may call which method of which service: an allowlist, closed by default.
//!
//! A method is refused to every role until a rule here names it, and the table test below
//! runs over every method of every service (the lists `rpc` generates next to each trait),
//! so a method added without a rule fails it. This module is a pure table: it never reads
//! a certificate (`crate::tls` does) and never answers a call (`rpc::RoleGuard` does).

use crate::tls::Role;

const CLIENT: &[Role] = &[Role::Client];
const CHUNKSERVER: &[Role] = &[Role::Chunkserver];
const SENTINEL: &[Role] = &[Role::Sentinel];
const MASTER: &[Role] = &[Role::Master];
// Reads a sentinel (and `mosaic-sentinel status`) may make besides clients: a sentinel
// never changes the namespace or data.
const CLIENT_OR_SENTINEL: &[Role] = &[Role::Client, Role::Sentinel];
const BUT_MASTER: &[Role] = &[Role::Master, Role::Client];
const ANYONE: &[Role] = &[
    Role::Master,
    Role::Chunkserver,
    Role::Client,
    Role::Sentinel,
];

/// The roles that may call `method` (tarpc's request name, `Service.method`); empty for a
/// method without a rule.
pub fn roles(method: &str) -> &'static [Role] {
    match method {
        // Filesystem clients. Reads are open to sentinels too; mutations, sessions' opens
        // and locks are the clients' alone.
        "MasterFs.hello"
        | "MasterFs.keepalive"
        | "MasterFs.goodbye"
        | "MasterFs.lookup"
        | "MasterFs.getattr"
        | "MasterFs.readlink"
        | "MasterFs.readdir"
        | "MasterFs.statfs"
        | "MasterFs.getxattr"
        | "MasterFs.listxattr"
        | "MasterFs.chunk_map"
        | "MasterFs.getlk"
        | "MasterFs.get_goal"
        | "MasterFs.report_bad_replica" => CLIENT_OR_SENTINEL,
        "MasterFs.setattr"
        | "MasterFs.create"
        | "MasterFs.create_open"
        | "MasterFs.unlink"
        | "MasterFs.rmdir"
        | "MasterFs.rename"
        | "MasterFs.link"
        | "MasterFs.setxattr"
        | "MasterFs.removexattr"
        | "MasterFs.open"
        | "MasterFs.release"
        | "MasterFs.prepare_write"
        | "MasterFs.commit_write"
        | "MasterFs.confirm_replicas"
        | "MasterFs.setlk"
        | "MasterFs.set_goal" => CLIENT,

        // Storage nodes: a chunkserver identity only ever needs this service, so a stolen
        // chunkserver key never reaches the namespace.
        "MasterNodes.register_node"
        | "MasterNodes.heartbeat"
        | "MasterNodes.report_chunks"
        | "MasterNodes.report_bad_replica" => CHUNKSERVER,

        // Administration. The summary and node contents are reads clients may make too
        // (`df`-like tools, tests); verdicts on nodes (which start re-replication), drains
        // and clearing a bad mark are the sentinels' alone (admins act through the
        // sentinel's credential).
        "MasterAdmin.cluster_summary" | "MasterAdmin.node_contents" | "MasterAdmin.node_files" => {
            CLIENT_OR_SENTINEL
        }
        "MasterAdmin.report_node_health"
        | "MasterAdmin.set_node_drain"
        | "MasterAdmin.clear_bad_replica"
        | "MasterAdmin.forget_node" => SENTINEL,

        // Chunkservers. Destroying, replacing or verifying a whole replica is the master's
        // decision alone: a client (even a malicious one with a valid credential) may write
        // blocks, never drop or overwrite a replica.
        "ChunkServer.read_blocks" | "ChunkServer.status" | "ChunkServer.list_chunks" => ANYONE,
        "ChunkServer.write_blocks" | "ChunkServer.sync_chunks" => BUT_MASTER,
        "ChunkServer.delete_chunks" | "ChunkServer.copy_from" | "ChunkServer.verify_replica" => {
            MASTER
        }
        _ => &[],
    }
}

/// Whether `role` may call `method`.
pub fn allowed(role: Role, method: &str) -> bool {
    roles(method).contains(&role)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::{
        CHUNK_SERVER_METHODS, MASTER_ADMIN_METHODS, MASTER_FS_METHODS, MASTER_NODES_METHODS,
    };
    use std::collections::BTreeSet;

    /// Every method of every service, from the service definitions.
    fn every_method() -> Vec<&'static str> {
        [
            MASTER_FS_METHODS,
            MASTER_NODES_METHODS,
            MASTER_ADMIN_METHODS,
            CHUNK_SERVER_METHODS,
        ]
        .concat()
    }

    #[test]
    fn every_method_of_every_service_has_a_rule() {
        let missing: Vec<_> = every_method()
            .into_iter()
            .filter(|m| roles(m).is_empty())
            .collect();
        assert!(
            missing.is_empty(),
            "methods without an authorization rule: {missing:?}"
        );
    }

    #[test]
    fn an_unknown_method_is_refused_to_every_role() {
        for role in Role::ALL {
            assert!(!allowed(role, "MasterFs.format_disk"));
            assert!(!allowed(role, "Master.hello"), "the version-1 name");
        }
    }

    #[test]
    fn role_table() {
        // method                                 master chunkserver client sentinel
        let table: &[(&str, [bool; 4])] = &[
            ("MasterFs.hello", [false, false, true, true]),
            ("MasterFs.keepalive", [false, false, true, true]),
            ("MasterFs.goodbye", [false, false, true, true]),
            ("MasterFs.lookup", [false, false, true, true]),
            ("MasterFs.getattr", [false, false, true, true]),
            ("MasterFs.setattr", [false, false, true, false]),
            ("MasterFs.create", [false, false, true, false]),
            ("MasterFs.create_open", [false, false, true, false]),
            ("MasterFs.unlink", [false, false, true, false]),
            ("MasterFs.rmdir", [false, false, true, false]),
            ("MasterFs.rename", [false, false, true, false]),
            ("MasterFs.link", [false, false, true, false]),
            ("MasterFs.readlink", [false, false, true, true]),
            ("MasterFs.readdir", [false, false, true, true]),
            ("MasterFs.statfs", [false, false, true, true]),
            ("MasterFs.getxattr", [false, false, true, true]),
            ("MasterFs.setxattr", [false, false, true, false]),
            ("MasterFs.listxattr", [false, false, true, true]),
            ("MasterFs.removexattr", [false, false, true, false]),
            ("MasterFs.open", [false, false, true, false]),
            ("MasterFs.release", [false, false, true, false]),
            ("MasterFs.chunk_map", [false, false, true, true]),
            ("MasterFs.prepare_write", [false, false, true, false]),
            ("MasterFs.commit_write", [false, false, true, false]),
            ("MasterFs.confirm_replicas", [false, false, true, false]),
            ("MasterFs.report_bad_replica", [false, false, true, true]),
            ("MasterFs.setlk", [false, false, true, false]),
            ("MasterFs.getlk", [false, false, true, true]),
            ("MasterFs.get_goal", [false, false, true, true]),
            ("MasterFs.set_goal", [false, false, true, false]),
            ("MasterNodes.register_node", [false, true, false, false]),
            ("MasterNodes.heartbeat", [false, true, false, false]),
            ("MasterNodes.report_chunks", [false, true, false, false]),
            (
                "MasterNodes.report_bad_replica",
                [false, true, false, false],
            ),
            ("MasterAdmin.cluster_summary", [false, false, true, true]),
            ("MasterAdmin.node_contents", [false, false, true, true]),
            ("MasterAdmin.node_files", [false, false, true, true]),
            (
                "MasterAdmin.report_node_health",
                [false, false, false, true],
            ),
            ("MasterAdmin.set_node_drain", [false, false, false, true]),
            ("MasterAdmin.clear_bad_replica", [false, false, false, true]),
            ("MasterAdmin.forget_node", [false, false, false, true]),
            ("ChunkServer.write_blocks", [true, false, true, false]),
            ("ChunkServer.read_blocks", [true, true, true, true]),
            ("ChunkServer.sync_chunks", [true, false, true, false]),
            ("ChunkServer.delete_chunks", [true, false, false, false]),
            ("ChunkServer.list_chunks", [true, true, true, true]),
            ("ChunkServer.status", [true, true, true, true]),
            ("ChunkServer.copy_from", [true, false, false, false]),
            ("ChunkServer.verify_replica", [true, false, false, false]),
        ];
        let listed: BTreeSet<&str> = table.iter().map(|(m, _)| *m).collect();
        let defined: BTreeSet<&str> = every_method().into_iter().collect();
        assert_eq!(
            listed, defined,
            "the table must cover exactly the services' methods"
        );
        let roles = [
            Role::Master,
            Role::Chunkserver,
            Role::Client,
            Role::Sentinel,
        ];
        for (method, expect) in table {
            for (role, want) in roles.iter().zip(expect) {
                assert_eq!(allowed(*role, method), *want, "{role} {method}");
            }
        }
    }
}
