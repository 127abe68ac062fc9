//! Who gets in: mutual TLS with the cluster's own CA on every connection, roles, revocation,
//! and bad bytes after a good handshake. Real daemons on loopback; every wait has a deadline.

use common::preamble::{self, PROTOCOL_VERSION, Service};
use common::rpc::{connect_chunkserver, connect_master_fs, connect_master_nodes, ctx};
use common::tls::{CredentialPaths, Role, Tls};
use master::ca::Ca;
use mosaic_tests::bins::{self, bin};
use mosaic_tests::cluster::{RPC_DEADLINE, block_on};
use mosaic_tests::{ClusterOptions, TestCluster, log_tail, wait_until_logged};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Time for a refusal to show: a handshake, a revocation poll (1 s), a heartbeat (200 ms).
const SETTLE: Duration = Duration::from_secs(30);

/// A child process killed and reaped when the test ends, also on panic.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Starts `mosaic-chunkserver` with `credentials`, logging to `log`.
fn spawn_chunkserver(cluster: &TestCluster, data: &Path, credentials: &Path, log: &Path) -> Guard {
    let log_file = std::fs::File::create(log).expect("create log");
    let child = Command::new(bin(bins::CHUNKSERVER))
        .arg("--master")
        .arg(cluster.master_addr())
        .arg("--data")
        .arg(data)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--credentials")
        .arg(credentials)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("clone log"))
        .stderr(log_file)
        .spawn()
        .expect("spawn mosaic-chunkserver");
    Guard(child)
}

/// Whether a fresh connection with `tls` gets an answer from the master.
fn master_answers(cluster: &TestCluster, tls: &Tls) -> bool {
    let addr = cluster.master_addr();
    block_on(async move {
        match connect_master_fs(&addr, tls, RPC_DEADLINE).await {
            Ok(client) => matches!(client.statfs(ctx(RPC_DEADLINE)).await, Ok(Ok(_))),
            Err(_) => false,
        }
    })
}

/// Whether a fresh connection with `tls` gets an answer from chunkserver `i`.
fn chunkserver_answers(cluster: &TestCluster, i: usize, tls: &Tls) -> bool {
    let addr = cluster.chunkserver_addr(i);
    block_on(async move {
        match connect_chunkserver(&addr, tls, RPC_DEADLINE).await {
            Ok(client) => matches!(client.status(ctx(RPC_DEADLINE)).await, Ok(Ok(_))),
            Err(_) => false,
        }
    })
}

/// Reads from `stream` until the server closes it; panics if it stays open past the deadline.
async fn expect_closed<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, what: &str) {
    let mut sink = Vec::new();
    match tokio::time::timeout(SETTLE, stream.read_to_end(&mut sink)).await {
        Ok(_) => {}
        Err(_) => panic!("the server kept the connection open after {what}"),
    }
}

#[test]
fn unknown_plaintext_and_wrong_role_peers_are_refused() {
    let cluster = TestCluster::start(ClusterOptions::default());
    let log = cluster.master_log();

    // A plaintext client: its bytes are not a TLS ClientHello; the master drops it.
    let addr = cluster.master_addr();
    block_on(async {
        let mut stream = TcpStream::connect(&addr).await.expect("connect");
        // What an old plaintext client would send: a length-prefixed bincode frame.
        stream
            .write_all(&[0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8])
            .await
            .expect("write");
        expect_closed(&mut stream, "a plaintext frame").await;
    });
    wait_until_logged(
        SETTLE,
        "the master to log the refused handshake",
        &log,
        || read(&log).contains("TLS handshake failed"),
    );

    // A client whose certificate comes from another CA: no session, whichever end notices.
    let foreign = Ca::generate("elsewhere").expect("CA");
    let foreign_client = foreign
        .issue(Role::Client, "intruder")
        .expect("issue")
        .tls()
        .expect("credential");
    assert!(!master_answers(&cluster, &foreign_client));
    assert!(!chunkserver_answers(&cluster, 0, &foreign_client));

    // A chunkserver with a credential of another cluster never registers.
    let rogue_dir = cluster.root().join("rogue");
    let rogue_creds = foreign
        .issue(Role::Chunkserver, "rogue")
        .expect("issue")
        .write_to(&rogue_dir.join("creds"))
        .expect("write");
    let rogue_log = cluster.root().join("logs").join("rogue.log");
    let _rogue = spawn_chunkserver(
        &cluster,
        &rogue_dir.join("data"),
        rogue_creds.cert.parent().expect("dir"),
        &rogue_log,
    );
    wait_until_logged(
        SETTLE,
        "the rogue chunkserver to fail its handshake",
        &rogue_log,
        || read(&rogue_log).contains("TLS handshake"),
    );
    let summary = cluster.master_summary().expect("summary");
    assert_eq!(
        summary.nodes.len(),
        3,
        "the rogue node must not be registered"
    );

    // A chunkserver started with a client credential refuses to start.
    let out = Command::new(bin(bins::CHUNKSERVER))
        .arg("--master")
        .arg(cluster.master_addr())
        .arg("--data")
        .arg(cluster.root().join("wrong-role"))
        .arg("--credentials")
        .arg(cluster.credentials("client"))
        .output()
        .expect("run mosaic-chunkserver");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("client certificate"), "{stderr}");

    // A client credential cannot speak the node protocol (role check at each method of the
    // nodes' service).
    let client = cluster.client_tls();
    let refused = block_on(async {
        let master = connect_master_nodes(&addr, &client, RPC_DEADLINE)
            .await
            .expect("connect");
        master
            .heartbeat(
                ctx(RPC_DEADLINE),
                common::NodeId(1),
                common::types::NodeStatus::default(),
            )
            .await
            .map_err(common::FsError::from)
    });
    assert_eq!(refused, Err(common::FsError::NotPermitted));
    assert!(master_answers(&cluster, &client), "the master still serves");
}

#[test]
fn garbage_after_the_handshake_closes_only_that_connection() {
    let cluster = TestCluster::start(ClusterOptions {
        chunkservers: 1,
        ..ClusterOptions::default()
    });
    let tls = cluster.client_tls();
    let targets = [
        (cluster.master_addr(), Role::Master, Service::MasterFs),
        (
            cluster.chunkserver_addr(0),
            Role::Chunkserver,
            Service::ChunkServer,
        ),
    ];
    // Each frame after a valid handshake: a length far over the limit (must not be
    // allocated), bytes that are no request, and an unknown enum variant.
    let frames: [(&str, Vec<u8>); 3] = [
        ("an oversize length", vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3]),
        ("garbage", {
            let mut f = vec![0, 0, 0, 64];
            f.extend((0..64u8).map(|b| b.wrapping_mul(37)));
            f
        }),
        ("an unknown variant", {
            let mut f = vec![0, 0, 0, 12];
            f.extend(u32::MAX.to_le_bytes());
            f.extend([0xee; 8]);
            f
        }),
    ];
    for (addr, role, service) in &targets {
        for (what, frame) in &frames {
            block_on(async {
                let tcp = TcpStream::connect(addr).await.expect("connect");
                let mut stream = tls.connect(tcp, *role, addr).await.expect("handshake");
                // A good preamble, so the bad frame reaches the request decoder.
                preamble::offer(&mut stream, *service, addr, RPC_DEADLINE)
                    .await
                    .expect("preamble");
                stream.write_all(frame).await.expect("write");
                stream.flush().await.expect("flush");
                expect_closed(&mut stream, what).await;
            });
        }
        // A truncated frame: the length promises more than ever comes, then the client
        // closes; the server sees EOF and drops the connection without waiting forever.
        block_on(async {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            let mut stream = tls.connect(tcp, *role, addr).await.expect("handshake");
            preamble::offer(&mut stream, *service, addr, RPC_DEADLINE)
                .await
                .expect("preamble");
            stream.write_all(&[0, 0, 1, 0, 9, 9]).await.expect("write");
            stream.shutdown().await.expect("shutdown");
            expect_closed(&mut stream, "a truncated frame").await;
        });
    }
    assert!(master_answers(&cluster, &tls), "the master still serves");
    assert!(
        chunkserver_answers(&cluster, 0, &tls),
        "the chunkserver still serves"
    );
}

#[test]
fn peers_of_another_protocol_version_are_refused_with_both_versions_named() {
    let cluster = TestCluster::start(ClusterOptions {
        chunkservers: 1,
        ..ClusterOptions::default()
    });
    let tls = cluster.client_tls();
    let log = cluster.master_log();
    let addr = cluster.master_addr();
    // A caller of a later protocol: the master answers with its own version and a refusal,
    // then closes.
    let answer = block_on(async {
        let tcp = TcpStream::connect(&addr).await.expect("connect");
        let mut stream = tls
            .connect(tcp, Role::Master, &addr)
            .await
            .expect("handshake");
        let mut frame = b"MOSA".to_vec();
        frame.extend((PROTOCOL_VERSION + 1).to_be_bytes());
        frame.push(1);
        stream.write_all(&frame).await.expect("write");
        stream.flush().await.expect("flush");
        let mut answer = [0u8; 5];
        tokio::time::timeout(SETTLE, stream.read_exact(&mut answer))
            .await
            .expect("an answer within the deadline")
            .expect("read the answer");
        expect_closed(&mut stream, "a refused preamble").await;
        answer
    });
    assert_eq!(
        answer[..4],
        PROTOCOL_VERSION.to_be_bytes(),
        "the master names its version"
    );
    assert_ne!(answer[4], 0, "the master must not accept another version");
    let named = format!(
        "the peer speaks protocol version {}, this build speaks {PROTOCOL_VERSION}",
        PROTOCOL_VERSION + 1
    );
    wait_until_logged(SETTLE, "the master to log both versions", &log, || {
        read(&log).contains(&named)
    });

    // A caller of the first protocol (no preamble: its first bytes are a tarpc frame).
    block_on(async {
        let tcp = TcpStream::connect(&addr).await.expect("connect");
        let mut stream = tls
            .connect(tcp, Role::Master, &addr)
            .await
            .expect("handshake");
        stream
            .write_all(&[0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8])
            .await
            .expect("write");
        stream.flush().await.expect("flush");
        expect_closed(&mut stream, "a version-1 frame").await;
    });
    wait_until_logged(SETTLE, "the master to log an older caller", &log, || {
        read(&log).contains("not a MosaicFS preamble")
    });

    // (The caller's side, a server of another version, is `common::preamble`'s unit test.)
    assert!(master_answers(&cluster, &tls), "the master still serves");
}

#[test]
fn revoked_credentials_are_refused_by_the_master_and_the_chunkservers() {
    let mut cluster = TestCluster::start(ClusterOptions::default());
    let load = |dir: &Path| {
        CredentialPaths::in_dir(dir)
            .load()
            .expect("load credential")
    };
    let doomed = load(&cluster.issue("client", "doomed"));
    assert!(master_answers(&cluster, &doomed));
    assert!(chunkserver_answers(&cluster, 0, &doomed));

    cluster.revoke("doomed");
    let log = cluster.master_log();
    wait_until_logged(
        SETTLE,
        "the master to refuse the revoked client",
        &log,
        || !master_answers(&cluster, &doomed),
    );
    let cs_log = cluster.chunkserver_log(0);
    wait_until_logged(
        SETTLE,
        "the chunkserver to learn the revocation from its heartbeat",
        &cs_log,
        || !chunkserver_answers(&cluster, 0, &doomed),
    );
    assert!(
        read(&cs_log).contains("certificate revoked"),
        "{}",
        log_tail(&cs_log)
    );
    // Everyone else is unaffected.
    let client = cluster.client_tls();
    assert!(master_answers(&cluster, &client));
    assert!(chunkserver_answers(&cluster, 0, &client));

    // A revoked chunkserver cannot come back.
    cluster.revoke("cs1");
    cluster.kill_chunkserver(1);
    wait_until_logged(SETTLE, "the master to load the revocation", &log, || {
        read(&log).matches("revocation list loaded").count() >= 2
    });
    let relog = cluster.root().join("logs").join("cs1-revoked.log");
    let _cs1 = spawn_chunkserver(
        &cluster,
        cluster.chunkserver_data_dir(1),
        &cluster.credentials("cs1"),
        &relog,
    );
    wait_until_logged(
        SETTLE,
        "the master to refuse the revoked chunkserver",
        &log,
        || {
            read(&log)
                .lines()
                .any(|l| l.contains("certificate revoked") && l.contains("chunkserver:cs1"))
        },
    );
}
