//! `bulkhead serve`: the API, the job worker and the webhook dispatcher, wired from the
//! settings.

use anyhow::Context;
use bulkhead_store::Store;
use tokio::sync::watch;

use crate::config::{AppConfig, ServeArgs};
use crate::http::state::{AppParts, AppState};
use crate::service::database::{load_master_key, load_peppers, Database};
use crate::service::worker::Worker;

pub(super) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config =
        AppConfig::new(&args.base_domain, args.key_environment).map_err(anyhow::Error::msg)?;
    config.trusted_proxies = args.trusted_proxies.clone();
    config
        .set_region_endpoints(&args.region_endpoints)
        .map_err(anyhow::Error::msg)?;
    let issuer = args
        .issuer
        .clone()
        .unwrap_or_else(|| format!("http://{}", args.listen));
    config.tokens = crate::service::tokens::TokenSettings::new(
        &issuer,
        &config.base_domain,
        &args.token_audience,
        std::time::Duration::from_secs(args.access_token_minutes.saturating_mul(60)),
    )
    .map_err(anyhow::Error::msg)?;
    config.tokens.max_delegation_depth = usize::from(args.max_delegation_depth);
    config.webhook_egress = args.egress.policy(&config.base_domain);
    config.connections = args.http.connections().map_err(anyhow::Error::msg)?;
    config.hashing = args.http.hashing().map_err(anyhow::Error::msg)?;
    config.rate_limits = args.limits.rate_limits().map_err(anyhow::Error::msg)?;
    config.caches = args.limits.caches().map_err(anyhow::Error::msg)?;
    let peppers = load_peppers(&args.database)?;
    let master = load_master_key(&args.database)?;
    let db = Database::open(&args.database).await?;
    let result = serve_with(&args, config, peppers, master, &db).await;
    db.shutdown().await?;
    result
}

async fn serve_with(
    args: &ServeArgs,
    config: AppConfig,
    peppers: crate::service::credentials::Peppers,
    master: bulkhead_auth::MasterKey,
    db: &Database,
) -> anyhow::Result<()> {
    db.migrate().await?;
    let master = std::sync::Arc::new(master);
    {
        // First start: create the signing keys (as the owner; the serving role only reads them).
        let owner = db.owner_pool(1).await?;
        if bulkhead_store::signing_keys::ensure_signing_keys(&owner, &master).await? {
            tracing::info!("created the access-token signing keys");
        }
        owner.close().await;
    }
    let store = db
        .serving_store(args.database.max_connections, Some(master.clone()))
        .await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    let log_key = crate::service::audit_log::load_log_key(
        &args.database.data_dir,
        args.database.database_url.is_some(),
    )?;
    let (stop, stopped) = watch::channel(false);
    let worker =
        (!args.no_worker).then(|| tokio::spawn(Worker::new(store.clone()).run(stopped.clone())));
    let dispatcher = if args.no_worker {
        None
    } else {
        let dispatcher =
            webhook_dispatcher(&store, &args.egress, &args.base_domain, master.clone())?;
        Some(tokio::spawn(dispatcher.run(stopped.clone())))
    };
    let sequencer = (!args.no_worker).then(|| {
        tokio::spawn(
            crate::service::audit_log::Sequencer::new(store.clone(), log_key.clone())
                .run(stopped.clone()),
        )
    });
    tracing::info!(%address, base_domain = %config.base_domain, embedded = db.embedded.is_some(), "bulkhead is serving");
    let clock = bulkhead_core::Clock::system();
    let limits = crate::service::rate_limits::RateLimits::new(
        &config.rate_limits,
        crate::config::environment::redis_url(),
        clock.clone(),
    )?;
    // A broken screening rule file is a start-up error, not a server that screens nothing.
    let screener = bulkhead_screening::Screener::builtin()
        .map_err(|e| anyhow::anyhow!("the screening rules do not load: {e}"))?;
    tracing::info!(rules_version = %screener.version(), "screening rules loaded");
    // Tool calls leave through the same guard (and the same operator proxy) as webhooks.
    let tool_client = bulkhead_webhooks::EgressClient::new(
        args.egress.policy(&args.base_domain),
        std::sync::Arc::new(bulkhead_webhooks::HickoryResolver::from_system()),
        &bulkhead_webhooks::EgressConfig {
            proxy: args.egress.webhook_proxy.clone(),
            user_agent: "Bulkhead-Tools/1".into(),
            ..Default::default()
        },
    )?;
    // Metadata documents are fetched for anyone who names a URL: the guard's own policy (https,
    // port 443, no allow-list), and no operator proxy, never the webhook exceptions.
    let document_client = bulkhead_webhooks::EgressClient::new(
        crate::service::oauth::metadata_document::egress_policy(&args.base_domain),
        std::sync::Arc::new(bulkhead_webhooks::HickoryResolver::from_system()),
        &bulkhead_webhooks::EgressConfig {
            user_agent: "Bulkhead-Metadata/1".into(),
            ..Default::default()
        },
    )?;
    let state = AppState::from_parts(AppParts {
        store: store.clone(),
        peppers,
        master_key: master.clone(),
        config,
        clock,
        rate_limits: Some(std::sync::Arc::new(limits)),
        // Fail closed: never serve checkpoints signed by anything but the configured key.
        audit: std::sync::Arc::new(crate::service::audit_log::AuditService::new(log_key)),
        tool_client,
        document_client,
        schema_pool: bulkhead_schema::Evaluator::with_defaults(),
        screener: std::sync::Arc::new(screener),
    });
    // Metrics on their own listener (loopback by default), never the API's. A bind failure is a
    // start-up error: an operator who asked for metrics gets them or a clear refusal.
    let metrics = match args.metrics_listen.0 {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!(
                    "cannot listen for metrics on {addr} (--metrics-listen; `off` turns it off)"
                )
            })?;
            tracing::info!(address = %listener.local_addr()?, "metrics are served");
            let mut stopped = stopped.clone();
            Some(tokio::spawn(crate::http::app::serve_metrics(
                listener,
                state.config().connections.clone(),
                async move {
                    let _ = stopped.changed().await;
                },
            )))
        }
        None => None,
    };
    // The operator API: its own listeners and router, writing through a small owner-role pool
    // that only the operator state holds (docs/operator-api.md).
    let owner = db.owner_store(Some(master.clone())).await?;
    let operators = crate::http::operator::start(
        &args.operator_listen.0,
        &args.database.data_dir,
        crate::http::operator::OperatorState::new(state.clone(), owner.clone()),
        stopped.clone(),
    )
    .await?;
    for endpoint in &operators.endpoints {
        tracing::info!(%endpoint, "the operator API is served");
    }
    // Tenants whose deletion's grace period has ended are purged by the worker process, through
    // the owner pool (the serving role can write neither the registry nor the deletion records).
    let purges = (!args.no_worker).then(|| {
        tokio::spawn(crate::service::deletion::run_purges(
            owner.clone(),
            state.audit().key().clone(),
            bulkhead_core::Clock::system(),
            std::time::Duration::from_secs(60),
            stopped.clone(),
        ))
    });
    eprint!("{}", banner(args, address, &operators.endpoints));
    let mut stopped_for_server = stopped;
    let shutdown = async move {
        tokio::select! {
            _ = shutdown_signal() => {}
            _ = stopped_for_server.changed() => {}
        }
    };
    crate::http::app::serve(listener, state, shutdown).await?;
    let _ = stop.send(true);
    if let Some(metrics) = metrics {
        metrics.await.ok();
    }
    operators.finish().await;
    if let Some(purges) = purges {
        purges.await.ok();
    }
    owner.close().await;
    if let Some(worker) = worker {
        worker.await.ok();
    }
    if let Some(dispatcher) = dispatcher {
        dispatcher.await.ok();
    }
    if let Some(sequencer) = sequencer {
        sequencer.await.ok();
    }
    store.close().await;
    tracing::info!("bulkhead stopped");
    Ok(())
}

/// The start banner: where everything is and what to do next. On stderr, beside the logs, so
/// that stdout stays the commands' data and a redirected `serve` still shows it.
fn banner(args: &ServeArgs, address: std::net::SocketAddr, operator: &[String]) -> String {
    use std::fmt::Write;
    let port = address.port();
    let mut text = String::from("\nBulkhead is serving.\n");
    let _ = writeln!(
        text,
        "  API        http://{address}  (tenant acme: http://acme.{}:{port})",
        args.base_domain
    );
    let _ = writeln!(text, "  OpenAPI    http://{address}/openapi.json");
    if operator.is_empty() {
        let _ = writeln!(text, "  Operator   off (--operator-listen)");
    }
    for endpoint in operator {
        let _ = writeln!(text, "  Operator   {endpoint}  (docs/operator-api.md)");
    }
    let default_socket = format!(
        "unix:{}",
        args.database
            .data_dir
            .join(crate::config::operator::OPERATOR_SOCKET)
            .display()
    );
    // `tenant create` finds the server through the data directory's socket (embedded), or
    // opens the same DATABASE_URL.
    if args.database.database_url.is_some() || operator.contains(&default_socket) {
        let data_dir = if args.database.data_dir == std::path::Path::new(".bulkhead") {
            String::new()
        } else {
            format!(" --data-dir {}", args.database.data_dir.display())
        };
        let _ = writeln!(
            text,
            "Next, in another terminal: bulkhead tenant create{data_dir} --slug acme --name \"Acme Corp\""
        );
    } else {
        let _ = writeln!(
            text,
            "Next: create a tenant through the operator API (docs/operator-api.md)"
        );
    }
    text.push('\n');
    text
}

/// The webhook dispatcher with the production resolver and the operator's egress policy.
pub(super) fn webhook_dispatcher(
    store: &Store,
    egress: &crate::config::EgressArgs,
    base_domain: &str,
    master: std::sync::Arc<bulkhead_auth::MasterKey>,
) -> anyhow::Result<std::sync::Arc<bulkhead_webhooks::delivery::Dispatcher>> {
    let config = bulkhead_webhooks::EgressConfig {
        proxy: egress.webhook_proxy.clone(),
        ..Default::default()
    };
    let client = bulkhead_webhooks::EgressClient::new(
        egress.policy(base_domain),
        std::sync::Arc::new(bulkhead_webhooks::HickoryResolver::from_system()),
        &config,
    )?;
    Ok(std::sync::Arc::new(
        bulkhead_webhooks::delivery::Dispatcher::new(
            store.clone(),
            client,
            bulkhead_core::Clock::system(),
            bulkhead_webhooks::delivery::DeliveryConfig::default(),
            master,
        ),
    ))
}

/// Completes on Ctrl-C or SIGTERM.
pub(super) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
