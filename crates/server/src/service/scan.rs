//! The API-key leak scanner: finds Bulkhead API keys (`bk_live_…`, `bk_test_…`) in files and
//! directory trees, e.g. as a pre-commit hook or in CI (`bulkhead key scan PATH…`).
//!
//! # What it finds
//! Every checksum-valid key, wherever its 57 characters appear in a file, even glued to other
//! text (see [`bulkhead_auth::find_keys`]). Because the last 6 characters of a key are a
//! checksum of the random part, a random string that merely looks like a key (right prefix,
//! right length, right alphabet) is ignored: roughly one look-alike in 2^32 slips through,
//! so findings are real keys, not noise.
//!
//! # What it never prints
//! A [`Finding`] holds only the key's [`display_prefix`](bulkhead_auth::ApiKey::display_prefix)
//! (`bk_live_AbC1`, 4 of the 43 random characters) and its environment, never the full key,
//! so a [`ScanReport`], its JSON form and [`ScanReport::render_text`] are safe to print and to
//! keep in CI logs. The one way to get at the secrets, to look them up (`--check-live`), is
//! [`scan_paths_with_keys`], which returns them as [`ApiKey`]s: those never print and are
//! zeroized on drop. (The file contents the scanner reads are ordinary buffers, freed but not
//! wiped; the keys were in those files in plain text anyway.)
//!
//! # What it reads
//! Named paths and, recursively, the directories among them, in a deterministic order:
//! - directories named `.git`, `target` or `node_modules` are skipped when met inside a tree
//!   (a path named explicitly is always scanned);
//! - symbolic links met inside a tree are never followed, so a tree cannot make the scanner
//!   leave it or loop; a path named explicitly is resolved, like `find -H`;
//! - only regular files are opened (never FIFOs, sockets or devices);
//! - files larger than `max_file_bytes` are skipped and counted in
//!   [`ScanReport::skipped_large`];
//! - binary files (a NUL byte in the first 8 KiB) are skipped and counted in
//!   [`ScanReport::skipped_binary`];
//! - files that are not valid UTF-8 are scanned lossily (invalid bytes never hide an ASCII
//!   key);
//! - paths that cannot be read are listed in [`ScanReport::errors`] and the scan goes on; it
//!   never panics.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use bulkhead_auth::{find_keys, ApiKey, KeyEnvironment};

/// A sensible `max_file_bytes` for [`scan_paths`]: 10 MiB. Source files and configs are far
/// smaller; larger files are usually data or build output.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 10 * 1024 * 1024;

/// Directory names skipped when met inside a tree: version control data, build output and
/// dependencies, none of which is the project's own text.
const SKIPPED_DIRS: [&str; 3] = [".git", "target", "node_modules"];

/// How much of a file's start is searched for a NUL byte to call it binary.
const BINARY_SNIFF_BYTES: usize = 8 * 1024;

/// One key found in one file. Holds no secret: only the key's display prefix.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// The file, as reached from the path that was given (serialised lossily as UTF-8).
    #[serde(serialize_with = "serialize_path_lossy")]
    pub path: PathBuf,
    /// 1-based line number (lines end at `\n`).
    pub line: usize,
    /// 1-based column, in characters (Unicode scalar values) of the file's text decoded as
    /// UTF-8, each invalid byte sequence counting as one character.
    pub column: usize,
    /// The key's [`display_prefix`](ApiKey::display_prefix), e.g. `bk_live_AbC1`: the prefix
    /// and the first 4 random characters. Safe to print.
    pub prefix: String,
    /// The key's environment: `"live"` or `"test"`.
    pub environment: &'static str,
}

/// The outcome of a scan: what was found, what was read, what was skipped, and what failed.
#[derive(Debug, Default, serde::Serialize)]
pub struct ScanReport {
    /// Every key found, by file in scan order, then by position in the file.
    pub findings: Vec<Finding>,
    /// Files read and searched (skipped files are not counted).
    pub files_scanned: u64,
    /// Files skipped because they are larger than the limit.
    pub skipped_large: u64,
    /// Files skipped as binary (a NUL byte in their first 8 KiB).
    pub skipped_binary: u64,
    /// Paths that could not be read, each as `path: reason`. They never contain file contents.
    pub errors: Vec<String>,
}

impl ScanReport {
    /// The human-readable report: one line per finding,
    /// `path:line:col: bk_live_AbC1… (live key)`, then one `error: …` line per unreadable
    /// path, then a summary line. Contains no secret beyond the display prefixes.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        // `write!` to a `String` cannot fail.
        for f in &self.findings {
            let _ = writeln!(
                out,
                "{}:{}:{}: {}… ({} key)",
                f.path.display(),
                f.line,
                f.column,
                f.prefix,
                f.environment
            );
        }
        for e in &self.errors {
            let _ = writeln!(out, "error: {e}");
        }
        let _ = writeln!(
            out,
            "{} found in {} scanned; skipped {} too large and {} binary; {}",
            plural(self.findings.len() as u64, "key"),
            plural(self.files_scanned, "file"),
            plural(self.skipped_large, "file"),
            plural(self.skipped_binary, "file"),
            plural(self.errors.len() as u64, "error"),
        );
        out
    }
}

/// Scans `paths` (files, and directories recursively) for API keys; see the
/// [module docs](self) for what is read and what is skipped. Files larger than
/// `max_file_bytes` are skipped ([`DEFAULT_MAX_FILE_BYTES`] is a sensible limit).
///
/// Never panics on I/O trouble: unreadable paths end up in [`ScanReport::errors`].
pub fn scan_paths(paths: &[PathBuf], max_file_bytes: u64) -> ScanReport {
    // Each key is dropped (and zeroized) as soon as its finding is recorded.
    Scanner::new(max_file_bytes, |_key| {}).run(paths)
}

/// Like [`scan_paths`], and also returns the keys themselves, for looking them up (the CLI's
/// `--check-live`): `keys[i]` is the key of `report.findings[i]`, the two vectors always have
/// the same length.
///
/// The secrets stay inside [`ApiKey`], which never prints them and zeroizes them on drop;
/// drop the vector as soon as the lookups are done.
pub fn scan_paths_with_keys(paths: &[PathBuf], max_file_bytes: u64) -> (ScanReport, Vec<ApiKey>) {
    let mut keys = Vec::new();
    let report = Scanner::new(max_file_bytes, |key| keys.push(key)).run(paths);
    debug_assert_eq!(report.findings.len(), keys.len());
    (report, keys)
}

/// The walk's state; `on_key` receives each found key right after its [`Finding`] is pushed.
struct Scanner<F: FnMut(ApiKey)> {
    max_file_bytes: u64,
    on_key: F,
    report: ScanReport,
}

impl<F: FnMut(ApiKey)> Scanner<F> {
    fn new(max_file_bytes: u64, on_key: F) -> Self {
        Scanner {
            max_file_bytes,
            on_key,
            report: ScanReport::default(),
        }
    }

    fn run(mut self, paths: &[PathBuf]) -> ScanReport {
        for path in paths {
            self.scan_root(path);
        }
        self.report
    }

    fn error(&mut self, path: &Path, what: impl std::fmt::Display) {
        self.report
            .errors
            .push(format!("{}: {what}", path.display()));
    }

    /// A path named by the caller: resolved even if it is a symlink, and scanned even if its
    /// name is one of [`SKIPPED_DIRS`].
    fn scan_root(&mut self, root: &Path) {
        match fs::metadata(root) {
            Err(e) => self.error(root, e),
            Ok(meta) if meta.is_dir() => self.walk(root),
            Ok(meta) if meta.is_file() => self.scan_file(root),
            Ok(_) => self.error(root, "not a regular file or directory"),
        }
    }

    /// Depth-first with an explicit stack (no recursion, so a deep tree cannot overflow the
    /// stack), entries sorted by name; symlinks are never followed.
    fn walk(&mut self, root: &Path) {
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) => {
                    self.error(&dir, e);
                    continue;
                }
            };
            let mut children = Vec::new();
            for entry in entries {
                match entry {
                    Ok(entry) => children.push(entry),
                    Err(e) => self.error(&dir, e),
                }
            }
            children.sort_by_key(fs::DirEntry::file_name);
            let mut subdirs = Vec::new();
            for entry in children {
                let path = entry.path();
                // `DirEntry::file_type` does not follow symlinks.
                let file_type = match entry.file_type() {
                    Ok(t) => t,
                    Err(e) => {
                        self.error(&path, e);
                        continue;
                    }
                };
                if file_type.is_dir() {
                    let name = entry.file_name();
                    if !SKIPPED_DIRS.iter().any(|skip| name == *skip) {
                        subdirs.push(path);
                    }
                } else if file_type.is_file() {
                    self.scan_file(&path);
                }
                // Anything else (symlinks, FIFOs, sockets, devices) is never opened.
            }
            // Reversed so that the first subdirectory by name is popped first.
            stack.extend(subdirs.into_iter().rev());
        }
    }

    fn scan_file(&mut self, path: &Path) {
        let bytes = match self.read_limited(path) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                self.report.skipped_large += 1;
                return;
            }
            Err(e) => {
                self.error(path, e);
                return;
            }
        };
        let sniff = bytes.get(..BINARY_SNIFF_BYTES).unwrap_or(&bytes);
        if sniff.contains(&0) {
            self.report.skipped_binary += 1;
            return;
        }
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        self.report.files_scanned += 1;
        self.record(path, &text);
    }

    /// The file's contents, or `None` if it is larger than the limit. The size is checked on
    /// the opened file before reading, and the read is capped, so a file growing meanwhile
    /// is still not read past the limit.
    fn read_limited(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            // Replaced by something else since the directory was listed.
            return Err(io::Error::other("not a regular file"));
        }
        if meta.len() > self.max_file_bytes {
            return Ok(None);
        }
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        file.take(self.max_file_bytes.saturating_add(1))
            .read_to_end(&mut bytes)?;
        if bytes.len() as u64 > self.max_file_bytes {
            return Ok(None);
        }
        Ok(Some(bytes))
    }

    /// Pushes a finding (and hands over the key) for every key in `text`.
    fn record(&mut self, path: &Path, text: &str) {
        let mut line = 1;
        let mut line_start = 0; // byte offset of the current line's first character
        let mut counted_to = 0; // newlines before this byte offset are counted
        for (offset, key) in find_keys(text) {
            // Offsets point at a key's ASCII first byte, so they are char boundaries; the
            // `unwrap_or_default`s are never taken.
            let before = text.get(counted_to..offset).unwrap_or_default();
            for (i, byte) in before.bytes().enumerate() {
                if byte == b'\n' {
                    line += 1;
                    line_start = counted_to + i + 1;
                }
            }
            counted_to = offset;
            let column = text
                .get(line_start..offset)
                .unwrap_or_default()
                .chars()
                .count()
                + 1;
            self.report.findings.push(Finding {
                path: path.to_path_buf(),
                line,
                column,
                prefix: key.display_prefix(),
                environment: environment_name(key.environment()),
            });
            (self.on_key)(key);
        }
    }
}

fn environment_name(env: KeyEnvironment) -> &'static str {
    match env {
        KeyEnvironment::Live => "live",
        KeyEnvironment::Test => "test",
    }
}

fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Serialises a path as a string even if it is not valid UTF-8 (serde's own impl fails).
fn serialize_path_lossy<S: serde::Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    use bulkhead_auth::KEY_LEN;
    use tempfile::TempDir;

    const LIMIT: u64 = 64 * 1024;

    fn write(dir: &Path, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = dir.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, contents).unwrap();
        path
    }

    fn scan_dir(dir: &TempDir) -> ScanReport {
        scan_paths(&[dir.path().to_path_buf()], LIMIT)
    }

    /// Asserts that nothing in `shown` reveals more of `key` than its display prefix: no
    /// window of 5 consecutive characters of the random part and checksum appears.
    fn assert_no_secret(shown: &str, key: &ApiKey) {
        let secret = key.expose_secret();
        let body = &secret[8..];
        for start in 0..=body.len() - 5 {
            let window = &body[start..start + 5];
            assert!(!shown.contains(window), "output leaks {window}: {shown}");
        }
        assert!(!shown.contains(secret));
    }

    /// A directory to scan and a key to hide in it.
    fn dir_and_key(environment: KeyEnvironment) -> (TempDir, ApiKey) {
        (TempDir::new().unwrap(), ApiKey::generate(environment))
    }

    fn lookalike() -> String {
        let key = ApiKey::generate(KeyEnvironment::Live);
        let mut bytes = key.expose_secret().as_bytes().to_vec();
        bytes[20] = if bytes[20] == b'a' { b'b' } else { b'a' };
        let fake = String::from_utf8(bytes).unwrap();
        assert_eq!(fake.len(), KEY_LEN);
        assert!(ApiKey::parse(&fake).is_err());
        fake
    }

    #[test]
    fn key_mid_line_found_at_its_position_and_never_printed() {
        let (dir, key) = dir_and_key(KeyEnvironment::Live);
        // Line 3, after 7 characters of which one (é) is 2 bytes: column 8 in chars.
        let text = format!(
            "first line\nsecond line\n  é = \"{}\"; // trailing\nlast\n",
            key.expose_secret()
        );
        let file = write(dir.path(), "src/config.rs", text);
        write(dir.path(), "src/clean.rs", "fn main() {}\n");

        let report = scan_dir(&dir);
        assert_eq!(
            report.findings,
            vec![Finding {
                path: file.clone(),
                line: 3,
                column: 8,
                prefix: key.display_prefix(),
                environment: "live",
            }]
        );
        assert_eq!(report.files_scanned, 2);
        assert!(report.errors.is_empty());

        let rendered = report.render_text();
        let expected = format!(
            "{}:3:8: {}… (live key)\n",
            file.display(),
            key.display_prefix()
        );
        assert!(rendered.starts_with(&expected), "{rendered}");
        assert!(
            rendered.ends_with(
                "1 key found in 2 files scanned; skipped 0 files too large and 0 files binary; 0 errors\n"
            ),
            "{rendered}"
        );
        assert_no_secret(&rendered, &key);
        assert_no_secret(&serde_json::to_string(&report).unwrap(), &key);
        assert_no_secret(&format!("{report:?}"), &key);
    }

    #[test]
    fn lookalike_with_wrong_checksum_ignored() {
        let dir = TempDir::new().unwrap();
        write(dir.path(), "notes.md", format!("key: {}\n", lookalike()));
        let report = scan_dir(&dir);
        assert!(report.findings.is_empty());
        assert_eq!(report.files_scanned, 1);
    }

    #[test]
    fn git_target_and_node_modules_dirs_skipped_unless_named() {
        let (dir, key) = dir_and_key(KeyEnvironment::Test);
        let git_file = write(dir.path(), ".git/config", key.expose_secret());
        write(dir.path(), "target/debug/out.txt", key.expose_secret());
        write(
            dir.path(),
            "web/node_modules/pkg/index.js",
            key.expose_secret(),
        );
        // A *file* with one of those names is scanned; only directories are skipped.
        let file_named_target = write(dir.path(), "sub/target", key.expose_secret());

        let report = scan_dir(&dir);
        let paths: Vec<_> = report.findings.iter().map(|f| f.path.clone()).collect();
        assert_eq!(paths, vec![file_named_target]);
        assert_eq!(report.files_scanned, 1);

        // Named explicitly, a skipped directory is scanned.
        let report = scan_paths(&[dir.path().join(".git")], LIMIT);
        assert_eq!(report.findings.len(), 1);
        assert_eq!(report.findings[0].path, git_file);
        assert_eq!(report.findings[0].environment, "test");
    }

    #[test]
    fn binary_file_skipped_and_counted() {
        let (dir, key) = dir_and_key(KeyEnvironment::Live);
        let mut blob = b"GIF89a\0\x01\x02".to_vec();
        blob.extend_from_slice(key.expose_secret().as_bytes());
        write(dir.path(), "assets/blob.gif", blob);

        let report = scan_dir(&dir);
        assert!(report.findings.is_empty());
        assert_eq!(report.skipped_binary, 1);
        assert_eq!(report.files_scanned, 0);
        assert!(report.render_text().contains("1 file binary"));

        // A NUL only after the first 8 KiB does not make a file binary.
        let dir = TempDir::new().unwrap();
        let mut late_nul = vec![b'x'; BINARY_SNIFF_BYTES];
        late_nul.push(0);
        late_nul.extend_from_slice(key.expose_secret().as_bytes());
        write(dir.path(), "late.txt", late_nul);
        let report = scan_dir(&dir);
        assert_eq!(report.findings.len(), 1);
        assert_eq!(report.skipped_binary, 0);
    }

    #[test]
    fn file_over_limit_skipped_and_counted() {
        let (dir, key) = dir_and_key(KeyEnvironment::Live);
        let limit = 1024;
        // Exactly at the limit: scanned.
        let mut at_limit = key.expose_secret().as_bytes().to_vec();
        at_limit.resize(limit, b'.');
        write(dir.path(), "a_at_limit.txt", at_limit);
        // One byte over: skipped.
        let mut over = key.expose_secret().as_bytes().to_vec();
        over.resize(limit + 1, b'.');
        write(dir.path(), "b_over.txt", over);

        let report = scan_paths(&[dir.path().to_path_buf()], limit as u64);
        assert_eq!(report.findings.len(), 1);
        assert!(report.findings[0].path.ends_with("a_at_limit.txt"));
        assert_eq!(report.skipped_large, 1);
        assert_eq!(report.files_scanned, 1);
        assert!(report.render_text().contains("skipped 1 file too large"));
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_inside_a_tree_not_followed() {
        use std::os::unix::fs::symlink;

        let outside = TempDir::new().unwrap();
        let key = ApiKey::generate(KeyEnvironment::Live);
        let secret_file = write(outside.path(), "secrets/env", key.expose_secret());

        let dir = TempDir::new().unwrap();
        symlink(&secret_file, dir.path().join("link.txt")).unwrap();
        symlink(secret_file.parent().unwrap(), dir.path().join("linkdir")).unwrap();
        // A link to its own directory would loop if followed.
        symlink(dir.path(), dir.path().join("self")).unwrap();
        write(dir.path(), "plain.txt", "nothing here\n");

        let report = scan_dir(&dir);
        assert!(report.findings.is_empty(), "{:?}", report.findings);
        assert_eq!(report.files_scanned, 1);
        assert!(report.errors.is_empty());

        // A symlink named explicitly is resolved.
        let report = scan_paths(&[dir.path().join("link.txt")], LIMIT);
        assert_eq!(report.findings.len(), 1);
    }

    #[test]
    fn nonexistent_path_is_an_error_entry_and_the_scan_goes_on() {
        let (dir, key) = dir_and_key(KeyEnvironment::Test);
        let real = write(dir.path(), "real.txt", key.expose_secret());
        let missing = dir.path().join("does/not/exist");

        let report = scan_paths(&[missing.clone(), real], LIMIT);
        assert_eq!(report.errors.len(), 1);
        assert!(
            report.errors[0].starts_with(&format!("{}: ", missing.display())),
            "{:?}",
            report.errors
        );
        assert_eq!(report.findings.len(), 1);
        assert_eq!(report.files_scanned, 1);
        let rendered = report.render_text();
        assert!(rendered.contains(&format!("error: {}: ", missing.display())));
        assert!(rendered.ends_with("; 1 error\n"), "{rendered}");
    }

    #[test]
    fn non_utf8_file_scanned_lossily() {
        let (dir, key) = dir_and_key(KeyEnvironment::Live);
        // Latin-1 text: "caf\xe9" is invalid UTF-8; so are 0xff and 0xfe.
        let mut bytes = b"caf\xe9\n\xff\xfe ".to_vec();
        bytes.extend_from_slice(key.expose_secret().as_bytes());
        bytes.extend_from_slice(b"\xff\n");
        write(dir.path(), "latin1.txt", bytes);

        let report = scan_dir(&dir);
        assert_eq!(report.findings.len(), 1);
        let f = &report.findings[0];
        assert_eq!((f.line, f.column), (2, 4));
        assert_eq!(f.prefix, key.display_prefix());
        assert_no_secret(&report.render_text(), &key);
    }

    #[test]
    fn two_keys_on_one_line_both_found_with_columns() {
        let dir = TempDir::new().unwrap();
        let a = ApiKey::generate(KeyEnvironment::Live);
        let b = ApiKey::generate(KeyEnvironment::Test);
        let c = ApiKey::generate(KeyEnvironment::Live);
        let line2 = format!("A={} → B={}", a.expose_secret(), b.expose_secret());
        let text = format!("\r\n{line2}\r\n\n{}{}\n", lookalike(), c.expose_secret());
        let file = write(dir.path(), "keys.env", text);

        let report = scan_paths(&[file], LIMIT);
        let got: Vec<_> = report
            .findings
            .iter()
            .map(|f| (f.line, f.column, f.prefix.clone(), f.environment))
            .collect();
        // "A=" is 2 chars; then the key (57), " → B=" (5 chars, 7 bytes).
        assert_eq!(
            got,
            vec![
                (2, 3, a.display_prefix(), "live"),
                (2, 3 + KEY_LEN + 5, b.display_prefix(), "test"),
                (4, 1 + KEY_LEN, c.display_prefix(), "live"),
            ]
        );
    }

    #[test]
    fn keys_are_index_aligned_with_findings() {
        let dir = TempDir::new().unwrap();
        let keys: Vec<_> = (0..4)
            .map(|i| {
                ApiKey::generate(if i % 2 == 0 {
                    KeyEnvironment::Live
                } else {
                    KeyEnvironment::Test
                })
            })
            .collect();
        write(
            dir.path(),
            "a.txt",
            format!("{} {}\n", keys[0].expose_secret(), keys[1].expose_secret()),
        );
        write(dir.path(), "b/c.txt", keys[2].expose_secret());
        write(
            dir.path(),
            "d.txt",
            format!("\n\n{}", keys[3].expose_secret()),
        );

        let (report, found) = scan_paths_with_keys(&[dir.path().to_path_buf()], LIMIT);
        assert_eq!(report.findings.len(), 4);
        assert_eq!(found.len(), 4);
        for (finding, key) in report.findings.iter().zip(&found) {
            assert_eq!(finding.prefix, key.display_prefix());
            assert_eq!(finding.environment, environment_name(key.environment()));
        }
        // Files in a directory come before its subdirectories, each sorted by name.
        let order: Vec<_> = found.iter().map(ApiKey::expose_secret).collect();
        let expected = [&keys[0], &keys[1], &keys[3], &keys[2]].map(ApiKey::expose_secret);
        assert_eq!(order, expected);
    }
}
