//! Secrets on the router's file system and in messages, with the real `netmon` binary
//! (no lab: `netmon passwd` and `netmon check-config` touch nothing in the kernel).
//! `netmon passwd` leaves the config it writes the hash into readable by its owner
//! and group only; `check-config` and config errors never print the password hash, a
//! webhook URL's path, query or user info.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};

const NETMON: &str = env!("CARGO_BIN_EXE_netmon");

fn netmon(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(NETMON)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run netmon");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait for netmon")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn check_config(path: &Path) -> Output {
    netmon(
        &["check-config", "--config", path.to_str().expect("UTF-8")],
        "",
    )
}

#[test]
fn passwd_leaves_the_config_readable_by_owner_and_group_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("netmon.toml");
    std::fs::write(&config, "# the router's config\nport = 8080\n").unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    // The group netmon reads it through (root:netmon in the packages) is kept.
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        std::os::unix::fs::chown(&config, Some(0), Some(4343)).unwrap();
    }
    let out = netmon(
        &["passwd", "--config", config.to_str().unwrap()],
        "a long enough password\n",
    );
    assert!(out.status.success(), "{}", text(&out));
    let meta = std::fs::metadata(&config).unwrap();
    assert_eq!(
        meta.mode() & 0o7777,
        0o640,
        "the config holding the hash must not be readable by others; netmon said:\n{}",
        text(&out)
    );
    if root {
        assert_eq!((meta.uid(), meta.gid()), (0, 4343), "owner kept");
    }
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(
        written.starts_with("# the router's config\n") && written.contains("$argon2id$"),
        "{written}"
    );
    assert!(
        text(&out).contains("0644") && text(&out).contains("0640"),
        "says it changed the mode:\n{}",
        text(&out)
    );
    // A config that does not exist yet is created for its owner alone.
    let fresh = dir.path().join("new.toml");
    let out = netmon(
        &["passwd", "--config", fresh.to_str().unwrap()],
        "a long enough password\n",
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::metadata(&fresh).unwrap().mode() & 0o7777, 0o600);
    // No temporary file left with the hash in it.
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn check_config_never_prints_the_hash_or_a_webhook_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("netmon.toml");
    let secrets = ["hunter2-plain", "t0pic-s3cret", "T0KEN-9f8e", "me:pa55w0rd"];
    let assert_hidden = |out: &Output, what: &str| {
        let all = text(out);
        for secret in secrets {
            assert!(!all.contains(secret), "{what}: `{secret}` printed:\n{all}");
        }
    };

    // The password pasted where its hash belongs.
    std::fs::write(
        &config,
        "[web]\npassword_hash = \"hunter2-plain\"\n[notify]\nwebhook_url = \"https://ntfy.sh/t0pic-s3cret\"\n",
    )
    .unwrap();
    let out = check_config(&config);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("web.password_hash"), "{}", text(&out));
    assert_hidden(&out, "a bad password_hash");

    // A webhook URL netmon cannot use: the scheme and host are shown, nothing more.
    std::fs::write(
        &config,
        "[notify]\nwebhook_url = \"ftp://me:pa55w0rd@gotify.lan/t0pic-s3cret?token=T0KEN-9f8e\"\n",
    )
    .unwrap();
    let out = check_config(&config);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("notify.webhook_url") && text(&out).contains("gotify.lan"),
        "{}",
        text(&out)
    );
    assert_hidden(&out, "a bad webhook_url");

    // A TOML syntax error on a secret's line.
    std::fs::write(&config, "[web]\npassword_hash = hunter2-plain\n").unwrap();
    let out = check_config(&config);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("line 2"), "{}", text(&out));
    assert_hidden(&out, "a TOML error");

    // A valid config: the effective config printed without its secrets.
    std::fs::write(
        &config,
        "[notify]\nwebhook_url = \"https://ntfy.sh/t0pic-s3cret?auth=T0KEN-9f8e\"\nformat = \"ntfy\"\n",
    )
    .unwrap();
    let out = check_config(&config);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("webhook_url = \"https://ntfy.sh/(not shown)\""),
        "{}",
        text(&out)
    );
    assert_hidden(&out, "check-config's output");
}
