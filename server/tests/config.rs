//! The configuration as an operator meets it, through the `synod` binary: every flag also as a
//! `SYNOD_*` environment variable (a flag wins over its variable), `--print-config` (the
//! effective configuration as a TOML file, secrets redacted), and `synod check-config` (the
//! configuration and its TLS material checked without starting anything).

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_synod");

/// Runs `synod args` with `env` (and no other `SYNOD_*` variable).
fn synod(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("SYNOD_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run synod")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

const NODE: &[(&str, &str)] = &[
    ("SYNOD_ID", "2"),
    (
        "SYNOD_MEMBERS",
        "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003",
    ),
    ("SYNOD_CLIENT_ADDR", "127.0.0.1:2182"),
    ("SYNOD_ADMIN_ADDR", "127.0.0.1:8082"),
    ("SYNOD_DATA_DIR", "/var/lib/synod-test"),
    ("SYNOD_INSECURE", "true"),
    ("SYNOD_SNAPSHOT_ENTRIES", "5000"),
];

#[test]
fn every_flag_is_also_an_environment_variable_and_a_flag_wins() {
    let out = synod(&["--print-config"], NODE);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let printed: toml::Table = toml::from_str(&stdout).expect("the printed config is TOML");
    assert_eq!(printed["id"].as_integer(), Some(2));
    assert_eq!(printed["snapshot_entries"].as_integer(), Some(5000));
    assert_eq!(printed["insecure"].as_bool(), Some(true));
    assert_eq!(printed["data_dir"].as_str(), Some("/var/lib/synod-test"));
    // Defaults are spelled out.
    assert_eq!(printed["tick_ms"].as_integer(), Some(500));
    assert_eq!(printed["read_consistency"].as_str(), Some("linearizable"));

    let out = synod(&["--print-config", "--id", "3"], NODE);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("id = 3"),
        "the flag wins over SYNOD_ID:\n{stdout}"
    );
}

#[test]
fn check_config_checks_tls_material_and_says_what_is_wrong() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let certs = dir.path().join("certs");
    for args in [
        vec!["create-ca", "--name", "config test CA"],
        vec!["create-node", "--id", "2", "--host", "127.0.0.1"],
    ] {
        let out = synod(
            &[
                &["certs", "--dir", certs.to_str().expect("path")],
                &args[..],
            ]
            .concat(),
            &[],
        );
        assert!(out.status.success(), "synod certs: {}", text(&out).1);
    }
    let file = |f: &str| certs.join(f).to_string_lossy().into_owned();
    let secure = |key: &str| -> Vec<String> {
        [
            "check-config",
            "--id",
            "2",
            "--members",
            "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003",
            "--secure-client-addr",
            "127.0.0.1:2282",
            "--admin-addr",
            "127.0.0.1:8082",
            "--data-dir",
            "/var/lib/synod-test",
            "--super-digest",
            "super:D/InIHSb7yEEbrWz8b9l71RjZJU=",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            "--tls-ca".into(),
            file("ca.crt"),
            "--tls-cert".into(),
            file("node2.crt"),
            "--tls-key".into(),
            file(key),
        ])
        .collect()
    };
    let run = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        synod(&refs, &[])
    };

    let out = run(secure("node2.key"));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("configuration ok: node 2 of 3"), "{stderr}");
    assert!(
        stdout.contains("super_digest = \"(set)\"") && !stdout.contains("D/InIHSb7y"),
        "the secret is redacted:\n{stdout}"
    );

    let out = run(secure("missing.key"));
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("missing.key"), "names the file: {stderr}");

    let out = synod(&["check-config", "--id", "2"], &[]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--members is required"), "{stderr}");
    assert!(
        !Path::new("/var/lib/synod-test").exists(),
        "nothing was written"
    );
}

/// The example configuration the package installs is a valid configuration.
#[test]
fn the_packaged_example_configuration_loads() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/synod.toml");
    let out = synod(
        &[
            "--config",
            example.to_str().expect("utf-8 path"),
            "--print-config",
        ],
        &[],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("id = 1"), "{stdout}");
    assert!(stdout.contains("min_free_space_mb = 1024"), "{stdout}");
}

#[test]
fn advertised_addresses_default_to_the_members_host_where_a_node_listens_everywhere() {
    let members = "1=zk1.lab.example:7001,2=zk2.lab.example:7001,3=zk3.lab.example:7001";
    let env: &[(&str, &str)] = &[
        ("SYNOD_ID", "2"),
        ("SYNOD_MEMBERS", members),
        ("SYNOD_CLIENT_ADDR", "0.0.0.0:2181"),
        ("SYNOD_ADMIN_ADDR", "10.0.1.2:8080"),
        ("SYNOD_DATA_DIR", "/var/lib/synod-test"),
        ("SYNOD_INSECURE", "true"),
    ];
    let printed = |extra: &[&str]| -> toml::Table {
        let mut args = vec!["--print-config"];
        args.extend_from_slice(extra);
        let out = synod(&args, env);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stderr}");
        toml::from_str(&stdout).expect("the printed config is TOML")
    };
    // Listening everywhere: the host this node is known by, at the listener's port; a
    // specific listen address is advertised as it is.
    let p = printed(&[]);
    assert_eq!(
        p["advertise_client_addr"].as_str(),
        Some("zk2.lab.example:2181")
    );
    assert_eq!(p["advertise_admin_addr"].as_str(), Some("10.0.1.2:8080"));
    // Given: as given (behind NAT, a load balancer).
    let p = printed(&["--advertise-client-addr", "zk.lab.example:12181"]);
    assert_eq!(
        p["advertise_client_addr"].as_str(),
        Some("zk.lab.example:12181")
    );
}

#[test]
fn the_container_files_set_only_variables_synod_reads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/container");
    let help = text(&synod(&["--help"], &[])).0;
    for file in ["Containerfile", "compose.yaml"] {
        let body = std::fs::read_to_string(dir.join(file)).expect("read the container file");
        let names: Vec<&str> = body
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("SYNOD_") && w.len() > "SYNOD_".len())
            .collect();
        assert!(!names.is_empty(), "{file} sets no SYNOD_ variable");
        for name in names {
            assert!(
                help.contains(&format!("[env: {name}=")),
                "{file} sets {name}, which `synod --help` does not list"
            );
        }
    }
}

/// The configuration docs/deploy.md tells a new user to write is one synod loads, and it
/// advertises the node by its host name.
#[test]
fn the_deployment_guides_configuration_loads() {
    let guide =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/deploy.md"))
            .expect("read docs/deploy.md");
    let block = guide
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a toml block in docs/deploy.md");
    let dir = tempfile::TempDir::new().expect("tempdir");
    let file = dir.path().join("synod.toml");
    std::fs::write(&file, block).expect("write the configuration");
    let out = synod(
        &[
            "--config",
            file.to_str().expect("utf-8 path"),
            "--print-config",
        ],
        &[],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let printed: toml::Table = toml::from_str(&stdout).expect("the printed config is TOML");
    assert_eq!(
        printed["members"]["2"].as_str(),
        Some("zk2.lab.example:7001")
    );
    assert_eq!(
        printed["advertise_client_addr"].as_str(),
        Some("zk1.lab.example:2281")
    );
    assert_eq!(
        printed["advertise_admin_addr"].as_str(),
        Some("zk1.lab.example:8443")
    );
}
