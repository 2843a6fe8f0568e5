use super::postmaster::{log_tail_section, server_options, tail_lines};
use super::*;

/// A directory under the system temp dir, removed on drop (the store crate has no
/// `tempfile` dependency).
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(label: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "bulkhead-embedded-test-{label}-{:016x}",
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        ScratchDir(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Held by tests that write executables or spawn processes: a process forked while another
/// test still has a script open for writing would make executing that script fail with
/// ETXTBSY ("text file busy").
static SPAWN_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Writes fake initdb, pg_ctl and postgres scripts into `dir`; `postgres --version` prints
/// `version_line`.
fn fake_server(dir: &Path, version_line: &str) {
    std::fs::create_dir_all(dir).expect("create fake bin dir");
    for name in ["initdb", "pg_ctl"] {
        write_script(&dir.join(name), "#!/bin/sh\nexit 0\n");
    }
    write_script(
        &dir.join("postgres"),
        &format!("#!/bin/sh\necho '{version_line}'\n"),
    );
}

fn write_script(path: &Path, body: &str) {
    std::fs::write(path, body).expect("write script");
    std::fs::set_permissions(path, Permissions::from_mode(0o755)).expect("chmod script");
}

fn other_user() -> ClusterUser {
    // An identity that owns nothing here: not us, not our group.
    ClusterUser {
        name: "someone-else".to_owned(),
        uid: Uid::from_raw(54_321),
        gid: Gid::from_raw(54_321),
        switch_from_root: true,
    }
}

#[test]
fn parses_major_versions() {
    assert_eq!(
        parse_major_version("postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"),
        Some(15)
    );
    assert_eq!(parse_major_version("postgres (PostgreSQL) 16.4"), Some(16));
    assert_eq!(
        parse_major_version("postgres (PostgreSQL) 17beta1"),
        Some(17)
    );
    assert_eq!(parse_major_version("postgres (PostgreSQL) 9.6.24"), Some(9));
    assert_eq!(parse_major_version("something else entirely"), None);
}

#[tokio::test]
async fn no_binaries_names_the_package_and_database_url() {
    let empty = ScratchDir::new("empty");
    let error = find_server_binaries(Some(OsStr::new("")), &empty.0.join("missing"))
        .await
        .expect_err("nothing to find");
    assert!(
        matches!(error, EmbeddedError::NoBinaries { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("initdb, pg_ctl, postgres >= 15"),
        "{message}"
    );
    assert!(message.contains("on PATH or under"), "{message}");
    assert!(message.contains("apt-get install postgresql"), "{message}");
    assert!(message.contains("DATABASE_URL"), "{message}");
    assert!(!message.contains('\n'), "one sentence: {message}");
}

#[tokio::test]
async fn incomplete_bin_dirs_are_ignored() {
    let _spawning = SPAWN_LOCK.lock().await;
    let root = ScratchDir::new("incomplete");
    let bin = root.0.join("bin");
    fake_server(&bin, "postgres (PostgreSQL) 16.1");
    std::fs::remove_file(bin.join("initdb")).expect("remove initdb");
    let error = find_server_binaries(Some(bin.as_os_str()), &root.0.join("missing"))
        .await
        .expect_err("no initdb");
    assert!(
        matches!(error, EmbeddedError::NoBinaries { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn too_old_servers_are_skipped_then_reported() {
    let _spawning = SPAWN_LOCK.lock().await;
    let root = ScratchDir::new("versions");
    let on_path = root.0.join("path-bin");
    fake_server(&on_path, "postgres (PostgreSQL) 14.9");
    let debian_root = root.0.join("lib-postgresql");
    fake_server(&debian_root.join("9.6/bin"), "postgres (PostgreSQL) 9.6.24");
    fake_server(&debian_root.join("15/bin"), "postgres (PostgreSQL) 15.2");
    fake_server(&debian_root.join("16/bin"), "postgres (PostgreSQL) 16.3");

    // PATH's 14 is too old: the highest Debian major wins.
    let found = find_server_binaries(Some(on_path.as_os_str()), &debian_root)
        .await
        .expect("16 is found");
    assert_eq!(found.major, 16);
    assert_eq!(found.bin_dir, debian_root.join("16/bin"));
    assert_eq!(found.pg_ctl, debian_root.join("16/bin/pg_ctl"));

    // Only old servers: the newest of them is named.
    let error = find_server_binaries(Some(on_path.as_os_str()), &root.0.join("missing"))
        .await
        .expect_err("14 is too old");
    match error {
        EmbeddedError::VersionTooOld {
            ref found,
            ref bin_dir,
        } => {
            assert!(found.contains("14.9"), "{found}");
            assert_eq!(bin_dir, &on_path);
        }
        other => panic!("expected VersionTooOld, got {other:?}"),
    }
}

#[tokio::test]
async fn path_comes_before_the_debian_root() {
    let _spawning = SPAWN_LOCK.lock().await;
    let root = ScratchDir::new("order");
    let on_path = root.0.join("path-bin");
    fake_server(&on_path, "postgres (PostgreSQL) 15.1");
    let debian_root = root.0.join("lib-postgresql");
    fake_server(&debian_root.join("17/bin"), "postgres (PostgreSQL) 17.0");
    let path_var =
        std::env::join_paths([Path::new("relative/ignored"), &on_path]).expect("join PATH");
    let found = find_server_binaries(Some(&path_var), &debian_root)
        .await
        .expect("found");
    assert_eq!(found.bin_dir, on_path);
    assert_eq!(found.major, 15);
}

#[test]
fn socket_dir_is_in_the_data_dir_when_short_enough() {
    let data_dir = Path::new("/var/lib/bulkhead/pg");
    assert_eq!(
        choose_socket_dir(data_dir, 54_321, Path::new("/tmp")),
        SocketDir::InDataDir(PathBuf::from("/var/lib/bulkhead/pg/run"))
    );
}

#[test]
fn socket_dir_moves_to_tmp_when_the_path_would_be_too_long() {
    let data_dir = PathBuf::from(format!("/srv/{}/pg", "deep/".repeat(20)));
    let chosen = choose_socket_dir(&data_dir, 65_535, Path::new("/tmp"));
    let SocketDir::PrivateTmp(dir) = &chosen else {
        panic!("expected /tmp, got {chosen:?}")
    };
    assert!(dir.starts_with("/tmp"));
    let name = dir.file_name().and_then(OsStr::to_str).expect("utf-8 name");
    assert!(
        name.starts_with("bulkhead-pg-") && name.len() == "bulkhead-pg-".len() + 16,
        "{name}"
    );
    assert!(socket_path_len(dir, 65_535) < MAX_SOCKET_PATH_LEN);
    // Stable for one data dir, distinct for another.
    assert_eq!(choose_socket_dir(&data_dir, 1, Path::new("/tmp")), chosen);
    let other = data_dir.join("x");
    assert_ne!(
        choose_socket_dir(&other, 1, Path::new("/tmp")).path(),
        chosen.path()
    );
}

#[test]
fn socket_path_length_counts_the_socket_file_name() {
    // "/a" + "/.s.PGSQL.5432"
    assert_eq!(socket_path_len(Path::new("/a"), 5432), 2 + 14);
    // The boundary: a path of exactly MAX_SOCKET_PATH_LEN bytes is refused.
    let long = format!(
        "/{}",
        "d".repeat(MAX_SOCKET_PATH_LEN - 1 - "/run/.s.PGSQL.5432".len())
    );
    assert_eq!(
        socket_path_len(&Path::new(&long).join("run"), 5432),
        MAX_SOCKET_PATH_LEN
    );
    assert!(matches!(
        choose_socket_dir(Path::new(&long), 5432, Path::new("/tmp")),
        SocketDir::PrivateTmp(_)
    ));
    let shorter = &long[..long.len() - 1];
    assert!(matches!(
        choose_socket_dir(Path::new(shorter), 5432, Path::new("/tmp")),
        SocketDir::InDataDir(_)
    ));
}

#[test]
fn fnv1a_matches_reference_values() {
    assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
}

#[test]
fn untraversable_ancestors_are_found() {
    let root = ScratchDir::new("traverse");
    let private = root.0.join("private");
    let data_dir = private.join("data");
    std::fs::create_dir_all(&data_dir).expect("create dirs");
    std::fs::set_permissions(&root.0, Permissions::from_mode(0o711)).expect("chmod root");

    std::fs::set_permissions(&private, Permissions::from_mode(0o700)).expect("chmod private");
    let blocked = first_untraversable_ancestor(&data_dir, &other_user()).expect("inspect");
    assert_eq!(blocked.as_deref(), Some(private.as_path()));

    // Search permission for others is enough; read permission is not needed.
    std::fs::set_permissions(&private, Permissions::from_mode(0o701)).expect("chmod private");
    assert_eq!(
        first_untraversable_ancestor(&data_dir, &other_user()).expect("inspect"),
        None
    );

    // The owner's own bits count for the owner (here: us).
    std::fs::set_permissions(&private, Permissions::from_mode(0o700)).expect("chmod private");
    let me = ClusterUser {
        name: "me".to_owned(),
        uid: nix::unistd::geteuid(),
        gid: nix::unistd::getegid(),
        switch_from_root: false,
    };
    assert_eq!(
        first_untraversable_ancestor(&data_dir, &me).expect("inspect"),
        None
    );
}

#[test]
fn unreachable_message_suggests_another_data_dir() {
    let error = EmbeddedError::Unreachable {
        path: PathBuf::from("/root"),
        user: "postgres".to_owned(),
    };
    let message = error.to_string();
    assert!(
        message.contains("/root") && message.contains("--data-dir") && message.contains("postgres"),
        "{message}"
    );
}

#[test]
fn paths_pg_ctl_cannot_quote_are_refused() {
    assert!(check_path_is_supported(Path::new("/var/lib/bulk head/it's")).is_ok());
    for bad in [
        "/tmp/a\"b",
        "/tmp/a$b",
        "/tmp/a`b`",
        "/tmp/a\\b",
        "/tmp/a\nb",
    ] {
        assert!(
            matches!(
                check_path_is_supported(Path::new(bad)),
                Err(EmbeddedError::UnsupportedPath { .. })
            ),
            "{bad:?} should be refused"
        );
    }
}

#[test]
fn server_options_survive_the_shell() {
    let _spawning = SPAWN_LOCK.blocking_lock();
    // pg_ctl runs `exec postgres <options>` through /bin/sh: the socket directory must come
    // out as one argument, double-quoted for PostgreSQL's list parser.
    let socket_dir = Path::new("/tmp/with space/it's,here");
    let options = server_options(socket_dir, 5433, false).expect("options");
    let output = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("printf '%s\\n' {options}"))
        .output()
        .expect("run sh");
    let words = String::from_utf8(output.stdout).expect("utf-8");
    let words: Vec<&str> = words.lines().collect();
    assert!(words.contains(&"listen_addresses="), "{words:?}");
    assert!(
        words.contains(&"unix_socket_directories=\"/tmp/with space/it's,here\""),
        "{words:?}"
    );
    assert!(words.contains(&"port=5433"), "{words:?}");
    assert!(words.contains(&"unix_socket_permissions=0700"), "{words:?}");
    assert!(words.contains(&"fsync=off"), "{words:?}");
    assert!(words.contains(&"full_page_writes=off"), "{words:?}");

    let durable = server_options(socket_dir, 5433, true).expect("options");
    assert!(!durable.contains("fsync"), "{durable}");
}

#[test]
fn log_tails_read_the_end_of_the_file() {
    let dir = ScratchDir::new("log");
    let log: String = (1..=5000).map(|n| format!("line {n}\n")).collect();
    std::fs::write(dir.0.join(LOG_FILE), &log).expect("write");
    let section = log_tail_section(&dir.0);
    assert!(section.ends_with("line 5000"), "{section}");
    assert!(
        section.contains("line 4981\n") && !section.contains("line 4980\n"),
        "{section}"
    );
}

#[test]
fn tails_keep_the_last_lines() {
    let text = (1..=30)
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    let tail = tail_lines(&text, 3);
    assert_eq!(tail, "28\n29\n30");
    assert_eq!(tail_lines("one", 20), "one");
}

#[test]
fn reads_pg_version_and_postmaster_pid() {
    let dir = ScratchDir::new("files");
    assert_eq!(read_pg_version(&dir.0).expect("read"), None);
    std::fs::write(dir.0.join("PG_VERSION"), "15\n").expect("write");
    assert_eq!(
        read_pg_version(&dir.0).expect("read").as_deref(),
        Some("15")
    );
    assert_eq!(read_postmaster_pid(&dir.0), None);
    // A real postmaster.pid is longer than one might guess: only its first line is the pid.
    let pid_file = "4242\n/var/lib/bulkhead/a-long-data-directory-name/pg\n1795514602\n32793\n/var/lib/bulkhead/pg/run\n\n  1234567   98304\nready   \n";
    std::fs::write(dir.0.join("postmaster.pid"), pid_file).expect("write");
    assert_eq!(read_postmaster_pid(&dir.0), Some(4242));
}

#[test]
fn symlinked_files_are_not_followed() {
    let dir = ScratchDir::new("symlink");
    std::fs::write(dir.0.join("target"), "secret\n").expect("write");
    std::os::unix::fs::symlink(dir.0.join("target"), dir.0.join(LOG_FILE)).expect("symlink");
    assert!(read_end_nofollow(&dir.0.join(LOG_FILE), 1024).is_err());
    assert!(read_start_nofollow(&dir.0.join(LOG_FILE), 1024).is_err());
    std::os::unix::fs::symlink(&dir.0, dir.0.join("linked-dir")).expect("symlink");
    assert!(open_dir_nofollow(&dir.0.join("linked-dir")).is_err());
}

#[test]
fn planted_tmp_socket_dirs_are_refused() {
    let root = ScratchDir::new("planted");
    let planted = root.0.join("bulkhead-pg-0000000000000000");
    std::os::unix::fs::symlink(&root.0, &planted).expect("symlink");
    let me = ClusterUser {
        name: "me".to_owned(),
        uid: nix::unistd::geteuid(),
        gid: nix::unistd::getegid(),
        switch_from_root: false,
    };
    let error =
        prepare_socket_dir(&SocketDir::PrivateTmp(planted), &me).expect_err("a symlink is refused");
    assert!(
        matches!(error, EmbeddedError::UnsafeSocketDir { .. }),
        "{error:?}"
    );
}

#[test]
fn root_runs_the_cluster_as_an_unprivileged_user() {
    let user = ClusterUser::for_this_process().expect("a user to run PostgreSQL as");
    assert!(!user.uid.is_root());
    assert_eq!(user.switch_from_root, nix::unistd::geteuid().is_root());
}
