//! The off-the-shelf clients the tests run as child processes (scripts in `tests/clients/`):
//! where their interpreter, browser and axe-core are, and what happens when one is missing.
//!
//! `.ci/run` installs them all and sets the variables; on a developer's machine a test whose
//! tools are missing is skipped, loudly. In CI (`CI` set) a missing tool fails the test instead:
//! CI must never pass by skipping the real clients.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The interpreter of the test clients' venv (`BULKHEAD_TEST_PYTHON`, else `python3`).
pub(crate) fn python() -> String {
    std::env::var("BULKHEAD_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// A client script in `tests/clients/`.
pub(crate) fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(name)
}

/// Whether `python` can import every module of `imports` (comma-separated).
pub(crate) fn python_has(python: &str, imports: &str) -> bool {
    Command::new(python)
        .args(["-c", &format!("import {imports}")])
        .status()
        .is_ok_and(|s| s.success())
}

/// `None` (the test returns) when `missing` is empty; otherwise skips loudly, or fails in CI.
pub(crate) fn require(test: &str, missing: &[String]) -> Option<()> {
    if missing.is_empty() {
        return Some(());
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: missing {missing:?}; CI must run the real clients (see .ci/run and the README's \
         prerequisites)"
    );
    eprintln!("SKIPPED {test}: missing {missing:?} (see the README's prerequisites)");
    None
}

/// What the browser tests drive: Playwright's Python package (in [`python`]), a Chromium
/// binary of the system (`BULKHEAD_TEST_CHROMIUM`, else `/usr/bin/chromium`; Playwright's own
/// browser downloads are never used), and axe-core's `axe.min.js` (`BULKHEAD_TEST_AXE`).
#[derive(Debug)]
pub(crate) struct BrowserTools {
    pub(crate) python: String,
    pub(crate) chromium: PathBuf,
    pub(crate) axe: PathBuf,
}

impl BrowserTools {
    /// The tools, or `None` after a loud skip (a failure in CI).
    pub(crate) fn find(test: &str) -> Option<Self> {
        let python = python();
        let chromium = PathBuf::from(
            std::env::var("BULKHEAD_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
        );
        let axe = std::env::var_os("BULKHEAD_TEST_AXE").map(PathBuf::from);
        let mut missing = Vec::new();
        if !python_has(&python, "playwright.sync_api") {
            missing.push(format!("Python package playwright in {python}"));
        }
        if !chromium.is_file() {
            missing.push(format!("Chromium at {}", chromium.display()));
        }
        match &axe {
            Some(path) if path.is_file() => {}
            Some(path) => missing.push(format!("axe-core at {}", path.display())),
            None => missing.push("BULKHEAD_TEST_AXE (axe-core's axe.min.js)".into()),
        }
        require(test, &missing)?;
        Some(Self {
            python,
            chromium,
            axe: axe.expect("checked above"),
        })
    }

    /// Runs `script` with one JSON argument and returns the JSON object it prints; panics with
    /// its standard error when it fails or outlasts `limit` (it is killed then).
    pub(crate) async fn run(
        &self,
        script_name: &str,
        argument: &serde_json::Value,
        limit: Duration,
    ) -> serde_json::Value {
        let child = tokio::process::Command::new(&self.python)
            .arg(script(script_name))
            .arg(argument.to_string())
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("ALL_PROXY")
            .kill_on_drop(true)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.python));
        // The script talks to the app this test's runtime serves: wait without blocking it.
        let output = tokio::time::timeout(limit, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("{script_name} took longer than {limit:?}"))
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{script_name} failed ({}):\n{stderr}",
            output.status
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("{script_name} printed no JSON ({e}):\n{stdout}\n{stderr}"))
    }
}

/// Node.js and oauth4webapi's `build/index.js`: `BULKHEAD_TEST_NODE` (else `node`) and
/// `BULKHEAD_TEST_OAUTH4WEBAPI`. `None` after a loud skip (a failure in CI).
pub(crate) fn oauth4webapi(test: &str) -> Option<(String, PathBuf)> {
    let node = std::env::var("BULKHEAD_TEST_NODE").unwrap_or_else(|_| "node".into());
    let module = std::env::var_os("BULKHEAD_TEST_OAUTH4WEBAPI").map(PathBuf::from);
    let mut missing = Vec::new();
    if !Command::new(&node)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        missing.push(format!("Node.js ({node})"));
    }
    match &module {
        Some(path) if path.is_file() => {}
        Some(path) => missing.push(format!("oauth4webapi at {}", path.display())),
        None => missing.push("BULKHEAD_TEST_OAUTH4WEBAPI (oauth4webapi's build/index.js)".into()),
    }
    require(test, &missing)?;
    Some((node, module.expect("checked above")))
}
