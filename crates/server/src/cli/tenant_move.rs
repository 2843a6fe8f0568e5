//! `bulkhead tenant move` through the running server's operator socket (as the other tenant
//! commands; docs/operator-api.md): the server runs the move in its background
//! (`POST …/move`), and the command follows it (`GET …/move`) until it ends, printing the same
//! report as on the data directory.

use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::remote::{self, Running};

/// How often the command asks the server how far the move has come.
const POLL: Duration = Duration::from_millis(200);

/// What was asked of `tenant move`, as far as the socket can carry it.
pub(super) struct MoveRequest<'a> {
    pub(super) tenant: &'a str,
    pub(super) to: Option<&'a str>,
    pub(super) region: Option<&'a str>,
    /// `--database-url` was given (a dedicated database).
    pub(super) names_database: bool,
    /// `--stop-after` was given.
    pub(super) stops_early: bool,
    pub(super) abandon: bool,
}

pub(super) async fn through_server(server: Running, ask: MoveRequest<'_>) -> anyhow::Result<()> {
    let path = format!("/operator/v1/tenants/{}/move", remote::segment(ask.tenant)?);
    if ask.abandon {
        let state = server
            .call(http::Method::DELETE, &path, None)
            .await
            .map_err(|e| remote::not_found_as_cli(e, ask.tenant))
            .context("cannot abandon the move")?;
        println!("{}", json!({ "abandoned": state["tenant_id"] }));
        return Ok(());
    }
    // The operator API never takes a database URL, and stopping after a step is a test's tool:
    // both need the data directory itself.
    if ask.names_database || ask.to == Some("dedicated") {
        bail!(
            "a move to a dedicated database names its URL, which the running server's operator \
             API never takes: stop the server and run this again"
        );
    }
    if ask.stops_early {
        bail!("--stop-after works on the data directory only: stop the server and run this again");
    }
    let mut body = json!({ "tier": ask.to.unwrap_or_default() });
    if let Some(region) = ask.region {
        body["region"] = json!(region);
    }
    server
        .call(http::Method::POST, &path, Some(body))
        .await
        .map_err(|e| remote::not_found_as_cli(e, ask.tenant))
        .context("the server did not start the move")?;
    let bar = indicatif::ProgressBar::new_spinner();
    let run = loop {
        let state = server
            .call(http::Method::GET, &path, None)
            .await
            .context("cannot follow the move; `tenant show` says where the tenant is, and the same command resumes an unfinished move")?;
        let run = state["run"].clone();
        if run.is_null() {
            bail!(
                "the server no longer knows this move's run (did it restart?): run the same \
                 command again to resume"
            );
        }
        bar.set_message(format!(
            "{} {}",
            run["step"].as_str().unwrap_or(""),
            run["table"].as_str().unwrap_or("")
        ));
        bar.tick();
        if !run["finished_at"].is_null() {
            break run;
        }
        tokio::time::sleep(POLL).await;
    };
    bar.finish_and_clear();
    if let Some(error) = run["error"].as_str() {
        bail!("the move stopped: {error}; run the same command again to resume");
    }
    let report: &Value = &run["report"];
    println!("{}", serde_json::to_string_pretty(report)?);
    Ok(())
}
