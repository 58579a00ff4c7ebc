//! The files in packaging/: the systemd unit (systemd-analyze, and rackd started with exactly the
//! unit's capabilities), the default configuration (rackd's own parser, docs/configuration.md)
//! and `make install` / `make uninstall` into a staging directory.
//!
//! Needs root, `make`, `systemd-analyze` and `setpriv`; a missing tool fails the test by name.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use rackd::config::Config;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn packaging(file: &str) -> PathBuf {
    workspace().join("packaging").join(file)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn rackd_bin() -> PathBuf {
    netns_tests::workspace_bin("rackd").unwrap_or_else(|e| {
        panic!("{e} (cargo test --workspace builds it; or cargo build -p rackd)")
    })
}

/// Runs a system tool, failing the test with a clear message when it is not installed.
fn tool(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} is needed for this test and cannot run: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Values of `key=` lines in the unit, in order (a key may repeat).
fn unit_values(key: &str) -> Vec<String> {
    let prefix = format!("{key}=");
    read(&packaging("rackd.service"))
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .collect()
}

/// The unit with its ExecStart pointed at `rackd` (as install.sh does for another prefix).
fn unit_for(rackd: &Path) -> String {
    let unit = read(&packaging("rackd.service"));
    assert_eq!(unit_values("ExecStart"), ["/usr/local/sbin/rackd"]);
    unit.replace(
        "ExecStart=/usr/local/sbin/rackd",
        &format!("ExecStart={}", rackd.display()),
    )
}

#[test]
fn unit_passes_systemd_analyze_verify_with_a_low_exposure() {
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("rackd.service");
    std::fs::write(&unit, unit_for(&rackd_bin())).unwrap();
    let unit = unit.to_str().unwrap();
    // The man page is checked by the install test; it is not installed on this machine.
    let out = tool("systemd-analyze", &["verify", "--man=no", unit]);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let out = tool("systemd-analyze", &["security", "--offline=true", unit]);
    let report = text(&out.stdout);
    let exposure: f64 = report
        .lines()
        .find_map(|l| l.split("Overall exposure level for rackd.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {report}{}", text(&out.stderr)));
    // 2.4 today; a dropped hardening option shows up here.
    assert!(exposure <= 3.0, "exposure {exposure}:\n{report}");
}

#[test]
fn unit_keeps_readiness_restart_and_socket_directory() {
    assert_eq!(unit_values("Type"), ["notify"]);
    assert_eq!(unit_values("Restart"), ["on-failure"]);
    // rackd's exit status for a bad configuration (rackd/src/main.rs).
    assert_eq!(unit_values("RestartPreventExitStatus"), ["2"]);
    assert_eq!(unit_values("RuntimeDirectory"), ["rackd"]);
    assert_eq!(
        Path::new(rackd::config::DEFAULT_CONTROL_SOCKET).parent(),
        Some(Path::new("/run/rackd")),
        "the unit's RuntimeDirectory must hold the default control socket"
    );
}

/// setpriv arguments that give rackd exactly the unit's capability bounding set.
fn unit_capabilities(except: Option<&str>) -> Vec<String> {
    let caps: Vec<String> = unit_values("CapabilityBoundingSet")
        .iter()
        .flat_map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .filter(|c| Some(c.as_str()) != except)
        .map(|c| {
            let name = c
                .strip_prefix("CAP_")
                .expect("capability names start with CAP_");
            format!("+{}", name.to_ascii_lowercase())
        })
        .collect();
    vec![
        "--no-new-privs".into(),
        "--inh-caps=-all".into(),
        format!("--bounding-set=-all,{}", caps.join(",")),
        "--".into(),
    ]
}

/// The daemon's config for the capability test: socket in `dir`, group nogroup.
fn socket_config(dir: &Path) -> PathBuf {
    let config = dir.join("rackd.toml");
    let socket = dir.join("control.sock");
    let text = format!(
        "[control]\nsocket = \"{}\"\ngroup = \"nogroup\"\n",
        socket.display()
    );
    std::fs::write(&config, text).unwrap();
    config
}

#[test]
fn rackd_runs_with_exactly_the_units_capabilities_and_is_ready_after_its_rules() {
    let topo = netns_tests::Topology::new().expect("a namespace host (needs root)");
    let host = topo.host("client");
    let dir = tempfile::tempdir().unwrap();
    let config = socket_config(dir.path());
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let mut command = host
        .command("setpriv")
        .args(unit_capabilities(None))
        .arg(rackd_bin())
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path);
    for assignment in unit_values("Environment") {
        let (key, value) = assignment.split_once('=').expect("Environment=KEY=VALUE");
        command = command.env(key, value);
    }
    let daemon = command.spawn().unwrap();
    assert_eq!(notification(&notify, &daemon), "READY=1");
    // Type=notify: by the time READY=1 arrives, the table must already be in place.
    host.run("nft", ["list", "table", "inet", "rackd"])
        .expect("rackd's table exists when it reports ready");
    let meta = std::fs::metadata(dir.path().join("control.sock")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!((meta.uid(), meta.gid()), (0, 65534), "root:nogroup");

    let term = tool("kill", &["-TERM", &daemon.pid().to_string()]);
    assert!(term.status.success());
    let out = daemon.wait(Duration::from_secs(10)).unwrap();
    assert!(
        out.success(),
        "rackd stopped with {}: {}",
        out.status,
        out.stderr
    );
    assert!(out.stderr.contains("rackd ready"), "{}", out.stderr);
    assert!(
        !out.stderr.contains('\x1b'),
        "colour codes would end up in the journal"
    );
    assert_eq!(notification(&notify, &daemon), "STOPPING=1");
}

/// The next message rackd sends to its notify socket; fails at once if rackd exits silently.
fn notification(socket: &UnixDatagram, daemon: &netns_tests::Process) -> String {
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 256];
    for _ in 0..100 {
        match socket.recv(&mut buf) {
            Ok(n) => return text(&buf[..n]),
            Err(_) if daemon.try_wait().unwrap().is_none() => continue,
            Err(_) => break,
        }
    }
    panic!("no notification from rackd: {}", daemon.stderr());
}

#[test]
fn every_capability_in_the_unit_is_needed() {
    let topo = netns_tests::Topology::new().expect("a namespace host (needs root)");
    let host = topo.host("client");
    for cap in unit_values("CapabilityBoundingSet")[0].split_whitespace() {
        let dir = tempfile::tempdir().unwrap();
        let out = host
            .command("setpriv")
            .args(unit_capabilities(Some(cap)))
            .arg(rackd_bin())
            .arg("--config")
            .arg(socket_config(dir.path()))
            .run(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("rackd without {cap} should stop at once: {e}"));
        assert_eq!(out.status.code(), Some(1), "without {cap}: {}", out.stderr);
        assert!(
            out.stderr.contains("Operation not permitted"),
            "without {cap}: {}",
            out.stderr
        );
    }
}

/// `section.key` for every key line in `text` (commented out with `#` or not).
fn config_keys(text: &str) -> BTreeSet<String> {
    let mut section = String::new();
    let mut keys = BTreeSet::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
        } else if let Some((key, _)) = line.trim_start_matches('#').split_once(" = ") {
            let key = key.trim();
            if key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                keys.insert(format!("{section}.{key}"));
            }
        }
    }
    keys
}

/// The default config with every key uncommented.
fn uncommented(text: &str) -> String {
    text.lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.contains(" = ") && !rest.starts_with(' ') => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn default_config_lists_every_key_with_its_builtin_default() {
    let path = packaging("rackd.toml");
    let text = read(&path);
    assert_eq!(Config::parse(&text, &path).unwrap(), Config::default());
    let explicit = uncommented(&text);
    assert_ne!(explicit, text);
    let parsed = Config::parse(&explicit, &path).unwrap_or_else(|e| panic!("{e}\n{explicit}"));
    assert_eq!(
        parsed,
        Config::default(),
        "a commented value is not the default"
    );

    let docs = read(&workspace().join("docs/configuration.md"));
    let block = docs
        .split("```toml")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a toml block in docs/configuration.md");
    let (documented, shipped) = (config_keys(block), config_keys(&text));
    assert_eq!(shipped.len(), 31, "{shipped:?}");
    assert_eq!(
        shipped, documented,
        "packaging/rackd.toml vs docs/configuration.md"
    );
}

/// Runs `make TARGET` in the workspace with `vars`.
fn make(target: &str, vars: &[(&str, &Path)]) -> String {
    let mut cmd = Command::new("make");
    cmd.arg("-s").arg("-C").arg(workspace()).arg(target);
    for (k, v) in vars {
        cmd.arg(format!("{k}={}", v.display()));
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("make is needed for this test: {e}"));
    assert!(
        out.status.success(),
        "make {target}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Every file under `root` with its mode, as "mode relative/path".
fn tree(root: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                dirs.push(path);
            } else {
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                found.insert(format!("{:o} {rel}", meta.permissions().mode() & 0o7777));
            }
        }
    }
    found
}

fn staged(lines: &[&str]) -> BTreeSet<String> {
    lines.iter().map(|l| l.to_string()).collect()
}

#[test]
fn make_install_and_uninstall_into_destdir() {
    let bins = rackd_bin().parent().unwrap().to_path_buf();
    let dest = tempfile::tempdir().unwrap();
    let vars = [("DESTDIR", dest.path()), ("BINDIR_SRC", bins.as_path())];
    make("install", &vars);
    let installed = staged(&[
        "755 usr/local/sbin/rackd",
        "755 usr/local/bin/rackctl",
        "644 usr/local/lib/systemd/system/rackd.service",
        "644 usr/local/lib/sysusers.d/rackd.conf",
        "644 usr/local/share/man/man1/rackctl.1",
        "644 usr/local/share/bash-completion/completions/rackctl",
        "644 usr/local/share/zsh/site-functions/_rackctl",
        "644 usr/local/share/fish/vendor_completions.d/rackctl.fish",
        "644 etc/rackd/rackd.toml",
    ]);
    assert_eq!(tree(dest.path()), installed);
    let at = |rel: &str| dest.path().join(rel);
    assert_eq!(
        read(&at("usr/local/lib/systemd/system/rackd.service")),
        read(&packaging("rackd.service"))
    );
    assert_eq!(
        read(&at("etc/rackd/rackd.toml")),
        read(&packaging("rackd.toml"))
    );
    assert!(read(&at("usr/local/share/man/man1/rackctl.1")).contains(".TH rackctl 1"));
    for completion in [
        "share/bash-completion/completions/rackctl",
        "share/zsh/site-functions/_rackctl",
        "share/fish/vendor_completions.d/rackctl.fish",
    ] {
        let script = read(&at(&format!("usr/local/{completion}")));
        assert!(script.contains("suspend"), "{completion}: {script}");
    }
    assert_eq!(
        std::fs::read(at("usr/local/sbin/rackd")).unwrap(),
        std::fs::read(bins.join("rackd")).unwrap()
    );

    // An admin's edits survive a reinstall and an uninstall.
    let edited = "[monitor]\ndetect_after_ms = 9000\n";
    std::fs::write(at("etc/rackd/rackd.toml"), edited).unwrap();
    let said = make("install", &vars);
    assert!(said.contains("keeping the existing"), "{said}");
    assert_eq!(read(&at("etc/rackd/rackd.toml")), edited);
    let said = make("uninstall", &[("DESTDIR", dest.path())]);
    assert!(said.contains("keeping the edited"), "{said}");
    assert_eq!(tree(dest.path()), staged(&["644 etc/rackd/rackd.toml"]));

    // An unedited default config goes, with its directory.
    std::fs::remove_file(at("etc/rackd/rackd.toml")).unwrap();
    make("install", &vars);
    make("uninstall", &[("DESTDIR", dest.path())]);
    assert_eq!(tree(dest.path()), BTreeSet::new());
    assert!(!at("etc/rackd").exists());
}

#[test]
fn another_prefix_moves_binaries_and_unit_and_points_the_unit_at_it() {
    let bins = rackd_bin().parent().unwrap().to_path_buf();
    let dest = tempfile::tempdir().unwrap();
    let prefix = Path::new("/usr");
    let vars = [
        ("DESTDIR", dest.path()),
        ("BINDIR_SRC", bins.as_path()),
        ("PREFIX", prefix),
    ];
    make("install", &vars);
    let unit = read(&dest.path().join("usr/lib/systemd/system/rackd.service"));
    assert!(unit.contains("\nExecStart=/usr/sbin/rackd\n"), "{unit}");
    assert!(dest.path().join("usr/sbin/rackd").is_file());
    assert!(dest.path().join("etc/rackd/rackd.toml").is_file());
    make("uninstall", &[("DESTDIR", dest.path()), ("PREFIX", prefix)]);
    assert_eq!(tree(dest.path()), BTreeSet::new());
}

#[test]
fn make_deb_builds_a_package_of_what_install_installs() {
    let bins = rackd_bin().parent().unwrap().to_path_buf();
    let out = tempfile::tempdir().unwrap();
    let said = make(
        "deb",
        &[
            ("BINDIR_SRC", bins.as_path()),
            ("OUT", out.path()),
            // Compressing 100 MB of debug binaries would take most of the test's time.
            ("COMPRESS", Path::new("none")),
        ],
    );
    let deb = PathBuf::from(said.trim());
    assert!(
        deb.starts_with(out.path()) && deb.is_file(),
        "make deb said {said:?}"
    );
    let ok = |o: Output| {
        assert!(o.status.success(), "{}", text(&o.stderr));
        o
    };
    let field = |name: &str| {
        let o = ok(tool("dpkg-deb", &["--field", deb.to_str().unwrap(), name]));
        text(&o.stdout).trim().to_string()
    };
    assert_eq!(field("Package"), "rackd");
    assert_eq!(field("Version"), env!("CARGO_PKG_VERSION"));
    assert!(field("Depends").contains("nftables"));
    let root = tempfile::tempdir().unwrap();
    ok(tool(
        "dpkg-deb",
        &["-x", deb.to_str().unwrap(), root.path().to_str().unwrap()],
    ));
    assert_eq!(
        tree(root.path()),
        staged(&[
            "755 usr/sbin/rackd",
            "755 usr/bin/rackctl",
            "644 usr/lib/systemd/system/rackd.service",
            "644 usr/lib/sysusers.d/rackd.conf",
            "644 usr/share/man/man1/rackctl.1",
            "644 usr/share/bash-completion/completions/rackctl",
            "644 usr/share/zsh/site-functions/_rackctl",
            "644 usr/share/fish/vendor_completions.d/rackctl.fish",
            "644 etc/rackd/rackd.toml",
        ])
    );
    let unit = read(&root.path().join("usr/lib/systemd/system/rackd.service"));
    assert!(unit.contains("\nExecStart=/usr/sbin/rackd\n"), "{unit}");
    // The configuration is a conffile (an admin's edits survive upgrades), and the maintainer
    // scripts are valid shell.
    let control = tempfile::tempdir().unwrap();
    ok(tool(
        "dpkg-deb",
        &[
            "-e",
            deb.to_str().unwrap(),
            control.path().to_str().unwrap(),
        ],
    ));
    assert_eq!(
        read(&control.path().join("conffiles")),
        "/etc/rackd/rackd.toml\n"
    );
    for script in ["postinst", "prerm", "postrm"] {
        let path = control.path().join(script);
        ok(tool("sh", &["-n", path.to_str().unwrap()]));
    }
}
