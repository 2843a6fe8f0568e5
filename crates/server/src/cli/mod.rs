//! The `bulkhead` command line.

mod audit;
mod keys;
mod lookup;
mod operator;
mod portability;
mod quota;
mod remote;
mod serve;
mod signing_key;
mod tenant;
mod tenant_delete;
mod tenant_move;
mod user;

use std::process::ExitCode;

use keys::KeyCommand;
use signing_key::SigningKeyCommand;
use tenant::TenantCommand;
use user::UserCommand;

use clap::{Parser, Subcommand};
use tokio::sync::watch;

use crate::config::{DatabaseArgs, ServeArgs};
use crate::service::database::{load_master_key, Database};
use crate::service::worker::Worker;

/// Bulkhead: tenant isolation, credentials and audit for multi-tenant platforms.
#[derive(Debug, Parser)]
#[command(name = "bulkhead", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: crate::config::LogArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP API (and, unless --no-worker, the job worker).
    Serve(Box<ServeArgs>),
    /// Apply database migrations as the owner role to every target (each region's shared
    /// schema, every tenant schema, every dedicated database), then exit; prints a report per
    /// target and exits 1 if any failed (it is left unchanged; run again to resume).
    Migrate {
        /// Targets migrated at once.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Run only the job worker; with --webhooks, only webhook delivery (run that one in an
    /// egress-only network segment: see docs/deployment.md).
    Worker {
        /// Deliver webhooks instead of running jobs.
        #[arg(long)]
        webhooks: bool,
        /// The platform's base domain (webhook URLs under it are refused).
        #[arg(long, env = "BULKHEAD_BASE_DOMAIN", default_value = "localhost")]
        base_domain: String,
        #[command(flatten)]
        egress: crate::config::EgressArgs,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Attack a running deployment's tenant isolation with two tenants' admin keys; prints an
    /// operation × attack table and exits 1 on any leak or unexpected answer (docs/probe.md).
    Probe {
        /// Where the API listens, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        base_url: url::Url,
        /// The tenants' base domain (tenant `acme` is `acme.<base-domain>`).
        #[arg(long, env = "BULKHEAD_BASE_DOMAIN", default_value = "localhost")]
        base_domain: String,
        /// Tenant A's slug (its data is the target).
        #[arg(long)]
        tenant_a: String,
        /// Tenant A's admin key.
        #[arg(long, env = "BULKHEAD_PROBE_KEY_A", hide_env_values = true)]
        key_a: String,
        /// Tenant B's slug (the attacker).
        #[arg(long)]
        tenant_b: String,
        /// Tenant B's admin key.
        #[arg(long, env = "BULKHEAD_PROBE_KEY_B", hide_env_values = true)]
        key_b: String,
        /// Read the operations from this OpenAPI file instead of GET /openapi.json.
        #[arg(long)]
        openapi: Option<std::path::PathBuf>,
        /// The operator API's loopback TCP address (`http://127.0.0.1:9091`): attack the
        /// operator door too (needs `BULKHEAD_PROBE_OPERATOR_KEY`).
        #[arg(long, requires = "operator_key")]
        operator_url: Option<url::Url>,
        /// An operator key (`bk_op_…`) for `--operator-url`.
        #[arg(long, env = "BULKHEAD_PROBE_OPERATOR_KEY", hide_env_values = true)]
        operator_key: Option<String>,
        /// Print the findings as JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Manage tenants.
    Tenant {
        #[command(subcommand)]
        action: TenantCommand,
    },
    /// Manage API keys (operator access to a tenant's keys), and scan files for leaked keys.
    Key {
        #[command(subcommand)]
        action: KeyCommand,
    },
    /// Verify audit exports and checkpoints offline; audit retention.
    Audit {
        #[command(subcommand)]
        action: audit::AuditCommand,
    },
    /// Manage the access-token signing keys.
    SigningKey {
        #[command(subcommand)]
        action: SigningKeyCommand,
    },
    /// Manage a tenant's human users.
    User {
        #[command(subcommand)]
        action: UserCommand,
    },
    /// The operator plane: operator keys for the operator API (docs/operator-api.md).
    Operator {
        #[command(subcommand)]
        action: operator::OperatorCommand,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::http::telemetry::init_logging_as(
        cli.log
            .log_format
            .is_pretty(std::io::IsTerminal::is_terminal(&std::io::stderr())),
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(*args).await,
        Command::Migrate { parallel, database } => {
            let db = Database::open(&database).await?;
            let result = tenant::migrate_everything(&db, &database, parallel).await;
            db.shutdown().await?;
            result
        }
        Command::Worker {
            webhooks,
            base_domain,
            egress,
            database,
        } => {
            let db = Database::open(&database).await?;
            db.migrate().await?;
            let master_key = load_master_key(&database).ok().map(std::sync::Arc::new);
            let store = db.app_store(database.max_connections, master_key).await?;
            let (stop, stopped) = watch::channel(false);
            // A purge's announcement reaches this process's opened data keys too.
            let keys = tokio::spawn(crate::service::ceilings::listen_for_changes(
                store.clone(),
                None,
            ));
            // `--webhooks`: delivery only, for a process in an egress-only network segment; it
            // needs no audit log key. Otherwise the job worker and the audit sequencer.
            let (worker, sequencer) = if webhooks {
                let master = std::sync::Arc::new(load_master_key(&database)?);
                let dispatcher = serve::webhook_dispatcher(&store, &egress, &base_domain, master)?;
                (tokio::spawn(dispatcher.run(stopped)), None)
            } else {
                let log_key = crate::service::audit_log::load_log_key(
                    &database.data_dir,
                    database.database_url.is_some(),
                )?;
                let sequencer = tokio::spawn(
                    crate::service::audit_log::Sequencer::new(store.clone(), log_key)
                        .run(stopped.clone()),
                );
                (
                    tokio::spawn(Worker::new(store.clone()).run(stopped)),
                    Some(sequencer),
                )
            };
            serve::shutdown_signal().await;
            let _ = stop.send(true);
            worker.await.ok();
            if let Some(sequencer) = sequencer {
                sequencer.await.ok();
            }
            keys.abort();
            store.close().await;
            db.shutdown().await
        }
        Command::Probe {
            base_url,
            base_domain,
            tenant_a,
            key_a,
            tenant_b,
            key_b,
            openapi,
            operator_url,
            operator_key,
            json,
        } => {
            let operator = match (operator_url, operator_key) {
                (Some(base_url), Some(operator_key)) => Some(bulkhead_probe::OperatorTarget {
                    base_url,
                    operator_key,
                }),
                _ => None,
            };
            let report = bulkhead_probe::run(bulkhead_probe::ProbeConfig {
                base_url,
                base_domain,
                tenant_a: bulkhead_probe::TenantCredentials {
                    slug: tenant_a,
                    admin_key: key_a,
                },
                tenant_b: bulkhead_probe::TenantCredentials {
                    slug: tenant_b,
                    admin_key: key_b,
                },
                openapi_file: openapi,
                operator,
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table());
            }
            eprintln!("{}", report.summary());
            if !report.passed() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Tenant { action } => tenant::run(action).await,
        Command::Key { action } => keys::run(action).await,
        Command::SigningKey { action } => signing_key::run(action).await,
        Command::User { action } => user::run(action).await,
        Command::Audit { action } => audit::run(action).await,
        Command::Operator { action } => operator::run(action).await,
    }
}

/// Prints a command's JSON answer, pretty, on stdout: every tenant command prints a JSON value,
/// so its two modes (socket, data directory) print the same text.
fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::LogFormat;

    #[test]
    fn logs_are_pretty_on_a_terminal_and_json_elsewhere_unless_told() {
        use clap::Parser;
        let parse = |args: &[&str]| {
            super::Cli::try_parse_from(args)
                .expect("parses")
                .log
                .log_format
        };
        // The default decides by the terminal.
        let auto = parse(&["bulkhead", "tenant", "list"]);
        assert_eq!(auto, LogFormat::Auto);
        assert!(auto.is_pretty(true));
        assert!(!auto.is_pretty(false));
        // The flag wins either way, before or after the subcommand.
        let json = parse(&["bulkhead", "serve", "--log-format", "json"]);
        assert!(!json.is_pretty(true));
        let pretty = parse(&["bulkhead", "--log-format", "pretty", "tenant", "list"]);
        assert!(pretty.is_pretty(false));
        assert!(super::Cli::try_parse_from(["bulkhead", "--log-format", "xml", "serve"]).is_err());
    }

    #[test]
    fn every_command_line_is_well_formed() {
        // clap checks flag clashes (two arguments claiming one --name) only when a command is
        // built; this builds every subcommand.
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
