//! The container image (packaging/container/Containerfile), built by `scripts/container.sh` with
//! podman from this build's binaries (the Debian package inside), run as a secure 3-node cluster
//! on a podman network of its own: members by container host name (`zk1:7001`), certificates for
//! those names, TLS on every port, each node configured by `SYNOD_*` variables only, its data in
//! a volume. Under write load the leader's container is killed and started again; no
//! acknowledged write is lost, and `/members` shows every member's advertised addresses. Then
//! packaging/container/compose.yaml is brought up with podman-compose on free ports and serves.
//! The compose file's variables are checked against `synod --help` by tests/config.rs.
//!
//! Needs root and podman, podman-compose, runc and debootstrap (`scripts/test.sh` installs them); the base image
//! is made from Debian's mirror when no registry is reachable.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use synod_client::tls::TlsOptions;
use synod_client::{Client, ConnectOptions, CreateMode};
use synod_testkit::load::WriteLoad;
use synod_testkit::{free_ports, synod_certs, wait_for, AdminHttp};

const BIN: &str = env!("CARGO_BIN_EXE_synod");
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const START: Duration = Duration::from_secs(90);

/// Runs `podman args` with the settings of scripts/podman-env.sh.
fn podman(args: &[&str]) -> Output {
    Command::new("bash")
        .arg("-c")
        .arg(r#". "$0/scripts/podman-env.sh" && exec podman "$@""#)
        .arg(ROOT)
        .args(args)
        .output()
        .expect("run podman")
}

/// `podman args`, which must succeed; its stdout.
fn podman_ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(
        out.status.success(),
        "podman {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What the test made in podman, removed when it ends (also on a panic).
struct Made {
    image: String,
    network: String,
    containers: Vec<String>,
    volumes: Vec<String>,
}

impl Drop for Made {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = podman(&["rm", "-f", "-t", "2", c]);
        }
        for v in &self.volumes {
            let _ = podman(&["volume", "rm", "-f", v]);
        }
        let _ = podman(&["network", "rm", "-f", &self.network]);
        let _ = podman(&["rmi", "-f", &self.image]);
    }
}

/// One node's container and the host ports its client and admin ports are published on.
struct Machine {
    name: String,
    client: SocketAddr,
    admin: SocketAddr,
}

fn status(http: &AdminHttp, m: &Machine) -> Option<Value> {
    let body = http.get(m.admin, "/status", Duration::from_secs(2)).ok()?;
    serde_json::from_str(&body).ok()
}

/// The index of the machine that leads, once all of `idxs` name it.
fn leader(http: &AdminHttp, machines: &[Machine], idxs: &[usize]) -> usize {
    wait_for(START, "one leader named by every node", || {
        let st: Vec<Value> = idxs
            .iter()
            .map(|&i| status(http, &machines[i]))
            .collect::<Option<_>>()?;
        let leader = st[0]["leader"].as_u64()? as usize - 1;
        let leads = idxs
            .iter()
            .zip(&st)
            .any(|(&i, s)| i == leader && s["role"] == "leader");
        let named = st
            .iter()
            .all(|s| s["leader"].as_u64() == Some(leader as u64 + 1));
        (leads && named).then_some(leader)
    })
}

#[test]
fn the_container_image_runs_a_secure_cluster_that_survives_a_killed_container() {
    let bins = Path::new(BIN).parent().expect("the binaries' directory");
    let tag = format!("synod-test-{}", std::process::id());
    let image = format!("localhost/{tag}:latest");
    let t = Instant::now();
    let built = Command::new("bash")
        .arg(Path::new(ROOT).join("scripts/container.sh"))
        .env("SYNOD_PACKAGE_BINARIES", bins)
        .env("SYNOD_IMAGE", &image)
        .output()
        .expect("run scripts/container.sh");
    assert!(
        built.status.success(),
        "scripts/container.sh: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let mut made = Made {
        image: image.clone(),
        network: tag.clone(),
        containers: Vec::new(),
        volumes: Vec::new(),
    };
    let build_time = t.elapsed();

    // Certificates for the containers' host names, readable by the image's `synod` user.
    let dir = tempfile::TempDir::new().expect("tempdir");
    let certs = dir.path().join("certs");
    let issue = |args: &[&str]| synod_certs(Path::new(BIN), &certs, args).expect("synod certs");
    issue(&["create-ca", "--name", "container test CA"]);
    for i in 1..=3 {
        let (id, host) = (i.to_string(), format!("zk{i}"));
        issue(&[
            "create-node",
            "--id",
            &id,
            "--host",
            &host,
            "--host",
            "127.0.0.1",
        ]);
    }
    for name in ["tester", "admin"] {
        issue(&["create-client", "--name", name]);
    }
    let uid = podman_ok(&["run", "--rm", "--entrypoint", "id", &image, "-u"]);
    let chown = Command::new("chown")
        .args(["-R", &uid])
        .arg(&certs)
        .status()
        .expect("chown");
    assert!(chown.success());

    podman_ok(&["network", "create", &tag]);
    let ports = free_ports(6).expect("free ports");
    let machines: Vec<Machine> = (0..3)
        .map(|i| Machine {
            name: format!("{tag}-zk{}", i + 1),
            client: SocketAddr::from(([127, 0, 0, 1], ports[2 * i])),
            admin: SocketAddr::from(([127, 0, 0, 1], ports[2 * i + 1])),
        })
        .collect();
    let mount = format!("{}:/etc/synod/certs:ro", certs.display());
    for (i, m) in machines.iter().enumerate() {
        let id = (i + 1).to_string();
        let volume = format!("{}-data", m.name);
        made.volumes.push(volume.clone());
        made.containers.push(m.name.clone());
        podman_ok(&[
            "run",
            "-d",
            "--name",
            &m.name,
            "--hostname",
            &format!("zk{id}"),
            "--network",
            &tag,
            "--network-alias",
            &format!("zk{id}"),
            "-v",
            &mount,
            "-v",
            &format!("{volume}:/var/lib/synod"),
            "-p",
            &format!("{}:2281", m.client),
            "-p",
            &format!("{}:8443", m.admin),
            "-e",
            &format!("SYNOD_ID={id}"),
            "-e",
            "SYNOD_MEMBERS=1=zk1:7001,2=zk2:7001,3=zk3:7001",
            "-e",
            &format!("SYNOD_TLS_CERT=/etc/synod/certs/node{id}.crt"),
            "-e",
            &format!("SYNOD_TLS_KEY=/etc/synod/certs/node{id}.key"),
            &image,
        ]);
    }
    let http = AdminHttp::https(
        &certs.join("ca.crt"),
        Some((&certs.join("admin.crt"), &certs.join("admin.key"))),
    )
    .expect("the operator's HTTPS client");
    let first = leader(&http, &machines, &[0, 1, 2]);
    // Every member as it advertises itself: its host name in the network, at its ports.
    let members: Value = serde_json::from_str(
        &http
            .get(machines[first].admin, "/members", Duration::from_secs(5))
            .expect("GET /members"),
    )
    .expect("JSON");
    for i in 1..=3u64 {
        let m = members["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["id"] == i))
            .unwrap_or_else(|| panic!("member {i}: {members}"));
        assert_eq!(m["peer_addr"], format!("zk{i}:7001"), "{members}");
        assert_eq!(m["client_addr"], format!("zk{i}:2281"), "{members}");
    }

    let tls = TlsOptions::new(certs.join("ca.crt"))
        .identity(certs.join("tester.crt"), certs.join("tester.key"))
        .connector()
        .expect("client TLS");
    let options = || {
        ConnectOptions::default()
            .tls(tls.clone())
            .connect_timeout(Duration::from_secs(10))
            .session_timeout(Duration::from_secs(30))
    };
    let all: String = machines
        .iter()
        .map(|m| m.client.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let rt = synod_testkit::runtime();
    rt.block_on(async {
        let zk = Client::connect(&all, options()).await.expect("connect");
        zk.create("/containers", b"", CreateMode::Persistent)
            .await
            .expect("create /containers");
        let _ = zk.close().await;
    });
    let load = Arc::new(WriteLoad::default());
    let writers: Vec<_> = (0..3)
        .map(|k| {
            rt.spawn(
                load.clone()
                    .writer(all.clone(), options(), "/containers".into(), k),
            )
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));

    // The leader's container is killed and started again.
    let t = Instant::now();
    podman_ok(&["kill", &machines[first].name]);
    let others: Vec<usize> = (0..3).filter(|&i| i != first).collect();
    let next = leader(&http, &machines, &others);
    podman_ok(&["start", &machines[first].name]);
    leader(&http, &machines, &[0, 1, 2]);
    wait_for(START, "the restarted container caught up", || {
        let target = status(&http, &machines[next])?["applied_index"].as_u64()?;
        let applied = status(&http, &machines[first])?["applied_index"].as_u64()?;
        (applied >= target).then_some(())
    });
    let restart = t.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    load.stop();
    rt.block_on(async {
        for w in writers {
            w.await.expect("writer task");
        }
    });
    let mut missing = Vec::new();
    rt.block_on(async {
        for m in &machines {
            let zk = Client::connect(&m.client.to_string(), options())
                .await
                .expect("connect");
            missing.extend(load.missing(&zk, "/containers").await);
            let _ = zk.close().await;
        }
    });
    println!(
        "\ncontainer image {image}: built in {:.1}s; 3 containers, leader zk{} killed and \
         started again (zk{} led meanwhile), caught up after {:.1}s; writes acknowledged {}, \
         failed (not acknowledged) {}, lost {}",
        build_time.as_secs_f64(),
        first + 1,
        next + 1,
        restart.as_secs_f64(),
        load.acknowledged_count(),
        load.failed(),
        missing.len()
    );
    assert!(load.acknowledged_count() > 50, "too little load");
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");

    compose_file_runs_a_cluster(&image, &format!("{tag}c"));
    drop(made);
}

/// `podman-compose -p project -f compose.yaml args`, with `env`.
fn compose(project: &str, env: &[(String, String)], args: &[&str]) -> Output {
    Command::new("bash")
        .arg("-c")
        .arg(
            r#". "$0/scripts/podman-env.sh" && exec podman-compose -p "$1" \
                -f "$0/packaging/container/compose.yaml" "${@:2}""#,
        )
        .arg(ROOT)
        .arg(project)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run podman-compose")
}

/// Takes a compose project down, its volumes and network with it.
struct Down<'a> {
    project: &'a str,
    env: &'a [(String, String)],
}

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = compose(self.project, self.env, &["down", "-v"]);
        let _ = podman(&["network", "rm", "-f", &format!("{}_default", self.project)]);
    }
}

/// packaging/container/compose.yaml as an operator starts it (its own certificates service,
/// nodes configured by variables), on free ports: the three nodes form a cluster that serves a
/// client with the certificates it issued.
fn compose_file_runs_a_cluster(image: &str, project: &str) {
    let ports = free_ports(6).expect("free ports");
    let mut env = vec![("IMAGE".to_string(), image.to_string())];
    for i in 0..3 {
        env.push((format!("ZK{}_CLIENT_PORT", i + 1), ports[2 * i].to_string()));
        env.push((
            format!("ZK{}_ADMIN_PORT", i + 1),
            ports[2 * i + 1].to_string(),
        ));
    }
    let _down = Down { project, env: &env };
    let up = compose(project, &env, &["up", "-d"]);
    assert!(
        up.status.success(),
        "podman-compose up: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    // The operator's certificate, out of the certificates volume.
    let dir = tempfile::TempDir::new().expect("tempdir");
    let volume = format!("{project}_certs:/c:ro");
    for f in ["ca.crt", "admin.crt", "admin.key"] {
        let body = wait_for(START, "the certificates service's output", || {
            let out = podman(&[
                "run",
                "--rm",
                "-v",
                &volume,
                "--entrypoint",
                "cat",
                image,
                &format!("/c/{f}"),
            ]);
            (out.status.success() && !out.stdout.is_empty()).then_some(out.stdout)
        });
        std::fs::write(dir.path().join(f), body).expect("write the certificate");
    }
    let machines: Vec<Machine> = (0..3)
        .map(|i| Machine {
            name: format!("{project}_zk{}_1", i + 1),
            client: SocketAddr::from(([127, 0, 0, 1], ports[2 * i])),
            admin: SocketAddr::from(([127, 0, 0, 1], ports[2 * i + 1])),
        })
        .collect();
    let http = AdminHttp::https(
        &dir.path().join("ca.crt"),
        Some((&dir.path().join("admin.crt"), &dir.path().join("admin.key"))),
    )
    .expect("the operator's HTTPS client");
    let leader = leader(&http, &machines, &[0, 1, 2]);
    let tls = TlsOptions::new(dir.path().join("ca.crt"))
        .identity(dir.path().join("admin.crt"), dir.path().join("admin.key"))
        .connector()
        .expect("client TLS");
    let options = || ConnectOptions::default().tls(tls.clone());
    synod_testkit::runtime().block_on(async {
        let zk = Client::connect(&machines[leader].client.to_string(), options())
            .await
            .expect("connect");
        zk.create("/compose", b"up", CreateMode::Persistent)
            .await
            .expect("create /compose");
        let _ = zk.close().await;
        let other = &machines[(leader + 1) % 3];
        let zk = Client::connect(&other.client.to_string(), options())
            .await
            .expect("connect");
        zk.sync("/compose").await.expect("sync");
        let (data, _) = zk.get_data("/compose").await.expect("get /compose");
        assert_eq!(&data[..], b"up");
        let _ = zk.close().await;
    });
    println!(
        "compose.yaml: 3 nodes up (podman-compose), {} leads, a write through it read on {}",
        machines[leader].name,
        machines[(leader + 1) % 3].name
    );
}
