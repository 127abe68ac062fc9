//! The audit log, live revocation and one-time join tokens, against real daemons: each
//! security event is triggered and then read back from the master's audit log
//! (`STATE/audit.log`, JSON lines). Every wait has a deadline.

use common::audit::{Event, Record};
use common::rpc::{connect_chunkserver, connect_master_fs, connect_master_nodes, ctx};
use common::tls::{CredentialPaths, Role};
use common::types::{Caller, FileKind, NewNode, OpId};
use common::{FsError, InodeId};
use master::ca::Ca;
use mosaic_tests::bins::{self, bin};
use mosaic_tests::cluster::{RPC_DEADLINE, block_on};
use mosaic_tests::{ClusterOptions, TestCluster, log_tail, wait_until_logged};
use serde_bytes::ByteBuf;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Time for an effect to show on a loaded machine: a handshake, a revocation poll (1 s), a
/// heartbeat (200 ms), a process start.
const SETTLE: Duration = Duration::from_secs(30);

/// A child process killed and reaped when the test ends, also on panic.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn events(cluster: &TestCluster) -> Vec<Record> {
    common::audit::read_all(&cluster.audit_log(), common::audit::DEFAULT_AUDIT_KEEP)
        .expect("read the audit log")
}

/// Waits until some audit record satisfies `pred`; returns it.
fn wait_for_event(cluster: &TestCluster, what: &str, pred: impl Fn(&Event) -> bool) -> Record {
    let mut found = None;
    wait_until_logged(SETTLE, what, &cluster.audit_log(), || {
        found = events(cluster).into_iter().find(|r| pred(&r.event));
        found.is_some()
    });
    found.expect("found")
}

#[test]
fn revocation_cuts_open_connections_and_security_events_are_audited() {
    let cluster = TestCluster::start(ClusterOptions {
        chunkservers: 1,
        ..ClusterOptions::default()
    });
    let addr = cluster.master_addr();
    let cs_addr = cluster.chunkserver_addr(0);
    let doomed = CredentialPaths::in_dir(&cluster.issue("client", "doomed"))
        .load()
        .expect("load credential");

    // An admitted client: a session, a mkdir (a namespace mutation), a call its role may not
    // make; connections to the master and a chunkserver stay open. One runtime for the whole
    // test: the clients' connections live as long as the runtime that spawned them.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (master, chunkserver) = rt.block_on(async {
        let master = connect_master_fs(&addr, &doomed, RPC_DEADLINE)
            .await
            .expect("connect");
        let chunkserver = connect_chunkserver(&cs_addr, &doomed, RPC_DEADLINE)
            .await
            .expect("connect");
        let info = master
            .hello(ctx(RPC_DEADLINE), "doomed-mount".into())
            .await
            .expect("rpc")
            .expect("hello");
        let node = NewNode {
            kind: FileKind::Dir,
            perm: 0o755,
            umask: 0o022,
            rdev: 0,
            symlink_target: None,
            caller: Caller {
                uid: 4321,
                gid: 8765,
                pid: 1,
            },
        };
        let op = OpId {
            session: info.session,
            seq: 1,
        };
        master
            .create(
                ctx(RPC_DEADLINE),
                op,
                InodeId::ROOT,
                ByteBuf::from(b"audited-dir".to_vec()),
                node,
            )
            .await
            .expect("rpc")
            .expect("mkdir");
        let refused = connect_master_nodes(&addr, &doomed, RPC_DEADLINE)
            .await
            .expect("connect")
            .heartbeat(
                ctx(RPC_DEADLINE),
                common::NodeId(1),
                common::types::NodeStatus::default(),
            )
            .await
            .map_err(FsError::from);
        assert_eq!(refused, Err(FsError::NotPermitted));
        chunkserver
            .status(ctx(RPC_DEADLINE))
            .await
            .expect("rpc")
            .expect("status");
        (master, chunkserver)
    });

    // A peer of another cluster.
    let foreign = Ca::generate("elsewhere")
        .expect("CA")
        .issue(Role::Client, "intruder")
        .expect("issue")
        .tls()
        .expect("credential");
    let foreign_refused = block_on(async {
        match connect_master_fs(&addr, &foreign, RPC_DEADLINE).await {
            Ok(client) => client.statfs(ctx(RPC_DEADLINE)).await.is_err(),
            Err(_) => true,
        }
    });
    assert!(foreign_refused);

    // Revoke while connected: both open connections are cut, without any new dial.
    let revoked_at = Instant::now();
    cluster.revoke("doomed");
    let cut = |name: &str, probe: &dyn Fn() -> bool| {
        let log = cluster.master_log();
        wait_until_logged(SETTLE, name, &log, || !probe());
        revoked_at.elapsed()
    };
    let master_cut = cut("the master to cut the revoked client's connection", &|| {
        rt.block_on(async { matches!(master.statfs(ctx(RPC_DEADLINE)).await, Ok(Ok(_))) })
    });
    let cs_cut = cut(
        "the chunkserver to cut the revoked client's connection",
        &|| rt.block_on(async { matches!(chunkserver.status(ctx(RPC_DEADLINE)).await, Ok(Ok(_))) }),
    );
    eprintln!("open connections cut after revoke: master {master_cut:?}, chunkserver {cs_cut:?}");
    // Bounded: the master polls every second, chunkservers learn it from a heartbeat.
    assert!(master_cut < SETTLE && cs_cut < SETTLE);

    let is_doomed = |p: &common::audit::Peer| p.name == "doomed" && p.role == "client";
    wait_for_event(&cluster, "connection_closed for the revoked client", |e| {
        matches!(e, Event::ConnectionClosed { peer, reason, .. }
            if is_doomed(peer) && reason.contains("revoked"))
    });
    // A new connection of the revoked client is refused and audited as such.
    let again = block_on(async {
        match connect_master_fs(&addr, &doomed, RPC_DEADLINE).await {
            Ok(client) => client.statfs(ctx(RPC_DEADLINE)).await.is_err(),
            Err(_) => true,
        }
    });
    assert!(again, "a revoked client must not be served");
    wait_for_event(&cluster, "connection_refused: certificate revoked", |e| {
        matches!(e, Event::ConnectionRefused { peer: Some(peer), reason, .. }
            if is_doomed(peer) && reason.contains("revoked"))
    });

    let records = events(&cluster);
    let has = |what: &str, pred: &dyn Fn(&Event) -> bool| {
        assert!(
            records.iter().any(|r| pred(&r.event)),
            "no {what} record in {}",
            log_tail(&cluster.audit_log())
        );
    };
    has(
        "connection_accepted",
        &|e| matches!(e, Event::ConnectionAccepted { peer, .. } if is_doomed(peer)),
    );
    has("handshake refusal of the foreign client", &|e| {
        matches!(e, Event::ConnectionRefused { peer: None, reason, .. }
            if reason.contains("TLS handshake failed"))
    });
    has("permission_denied", &|e| {
        matches!(e, Event::PermissionDenied { peer, method }
            if is_doomed(peer) && method == "MasterNodes.heartbeat")
    });
    has("mkdir mutation with uid/gid", &|e| {
        matches!(e, Event::Mutation(m) if m.op.starts_with("create")
            && m.name.as_deref() == Some("audited-dir")
            && m.uid == Some(4321) && m.gid == Some(8765)
            && m.parent == Some(1) && m.result == "ok"
            && m.path.as_deref() == Some("/audited-dir")
            && m.peer.as_ref().is_some_and(is_doomed))
    });
    has(
        "credential_issued by the admin",
        &|e| matches!(e, Event::CredentialIssued { name, via, .. } if name == "doomed" && via == "admin"),
    );
    has(
        "credential_revoked",
        &|e| matches!(e, Event::CredentialRevoked { name, .. } if name == "doomed"),
    );
    // Every record carries a time and a source.
    assert!(
        records
            .iter()
            .all(|r| r.unix_ms > 0 && r.time.ends_with('Z'))
    );
    assert!(records.iter().any(|r| r.source == "admin"));
    assert!(records.iter().any(|r| r.source == "master"));
}

/// Runs `mosaic-master issue-token ROLE NAME --ttl TTL`; returns the token it printed.
fn issue_token(cluster: &TestCluster, role: &str, name: &str, ttl: &str) -> String {
    let out = Command::new(bin(bins::MASTER))
        .args(["issue-token", role, name, "--ttl", ttl, "--state"])
        .arg(cluster.state_dir())
        .output()
        .expect("run mosaic-master issue-token");
    assert!(
        out.status.success(),
        "issue-token failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

fn redeem(cluster: &TestCluster, text: &str) -> Result<(), String> {
    let addr = cluster.join_addr();
    let token = common::join::Token::parse(text).map_err(|r| r.to_string())?;
    block_on(async {
        common::join::redeem(&addr, &token, RPC_DEADLINE)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
}

fn spawn_joining_chunkserver(
    cluster: &TestCluster,
    token: &str,
    creds: &Path,
    data: &Path,
    log: &Path,
) -> Guard {
    let log_file = std::fs::File::create(log).expect("create log");
    let child = Command::new(bin(bins::CHUNKSERVER))
        .arg("--master")
        .arg(cluster.master_addr())
        .arg("--data")
        .arg(data)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--credentials")
        .arg(creds)
        .arg("--join-token")
        .arg(token)
        .arg("--join")
        .arg(cluster.join_addr())
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("clone log"))
        .stderr(log_file)
        .spawn()
        .expect("spawn mosaic-chunkserver");
    Guard(child)
}

#[test]
fn join_tokens_work_once_and_refusals_are_audited() {
    let cluster = TestCluster::start(ClusterOptions {
        chunkservers: 1,
        ..ClusterOptions::default()
    });
    let token = issue_token(&cluster, "chunkserver", "joined", "10m");
    assert!(token.starts_with(common::join::TOKEN_PREFIX), "{token}");
    let stored = std::fs::read_to_string(cluster.state_dir().join("pki/tokens")).expect("read");
    let secret = token.split('.').nth(2).expect("secret");
    assert!(!stored.contains(secret), "the master stores no secret");

    // A chunkserver with nothing but the token joins and registers.
    let root = cluster.root().join("joined");
    let creds = root.join("creds");
    let log = cluster.root().join("logs").join("joined.log");
    let _joined = spawn_joining_chunkserver(&cluster, &token, &creds, &root.join("data"), &log);
    wait_until_logged(SETTLE, "the joined chunkserver to register", &log, || {
        cluster
            .master_summary()
            .is_ok_and(|s| s.nodes.len() == 2 && s.nodes.iter().all(|n| n.online))
    });
    let tls = CredentialPaths::in_dir(&creds)
        .load()
        .expect("joined credential");
    assert_eq!(tls.identity().role, Role::Chunkserver);
    assert_eq!(tls.identity().name, "joined");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(creds.join("key.pem"))
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // The same token again: refused.
    let reuse = redeem(&cluster, &token).expect_err("a token works once");
    assert!(reuse.contains("used"), "{reuse}");
    // A made-up secret under a real id: refused as forged.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[2] = "ab".repeat(32);
    let forged = redeem(&cluster, &parts.join(".")).expect_err("forged");
    assert!(forged.contains("forged"), "{forged}");
    // A token for another cluster's CA: the joiner refuses the endpoint itself and never
    // sends the secret.
    let mut other = token.split('.').map(str::to_owned).collect::<Vec<_>>();
    other[3] = "cd".repeat(32);
    let pinned = redeem(&cluster, &other.join(".")).expect_err("wrong CA");
    assert!(pinned.contains("CA"), "{pinned}");
    // An expired token: wall-clock expiry is what is tested, so the clock has to pass it.
    let short = issue_token(&cluster, "client", "late", "1s");
    std::thread::sleep(Duration::from_millis(2_100));
    let late = redeem(&cluster, &short).expect_err("expired");
    assert!(late.contains("expired"), "{late}");

    let records = events(&cluster);
    let reasons: Vec<&str> = records
        .iter()
        .filter_map(|r| match &r.event {
            Event::TokenRefused { reason, .. } => Some(reason.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        ["used", "forged", "expired"],
        "{}",
        log_tail(&cluster.audit_log())
    );
    let issued = records
        .iter()
        .filter(|r| matches!(&r.event, Event::TokenIssued { .. }))
        .count();
    assert_eq!(issued, 2);
    assert!(records.iter().any(|r| matches!(&r.event,
        Event::TokenUsed { name, serial, .. }
            if name == "joined" && *serial == tls.identity().serial)));
    assert!(records.iter().any(|r| matches!(&r.event,
        Event::CredentialIssued { name, via, .. } if name == "joined" && via == "join-token")));
    // The joined node's connection shows up under its new identity.
    assert!(records.iter().any(|r| matches!(&r.event,
        Event::ConnectionAccepted { peer, .. } if peer.name == "joined")));
}
