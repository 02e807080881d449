//! What the receivers show of themselves: logs on standard error (`AIRMY_LOG_FORMAT`,
//! `RUST_LOG`) and, on `AIRMY_METRICS_LISTEN`, `GET /metrics` in the Prometheus text format.

use std::net::SocketAddr;

use crate::ConfigError;

/// The log format on standard error (`AIRMY_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (`text`, the default), coloured only on a terminal.
    #[default]
    Text,
    /// One JSON object per line (`json`), with the spans each line happened in.
    Json,
}

impl LogFormat {
    /// Reads `AIRMY_LOG_FORMAT`: unset or empty is `text`.
    ///
    /// # Errors
    ///
    /// Anything but `text` or `json`.
    pub fn from_setting(setting: Option<&str>) -> Result<Self, ConfigError> {
        match setting.map(str::trim) {
            None | Some("" | "text") => Ok(Self::Text),
            Some("json") => Ok(Self::Json),
            Some(other) => Err(ConfigError(format!(
                "AIRMY_LOG_FORMAT must be `text` or `json`, got {other:?}"
            ))),
        }
    }
}

/// Reads `AIRMY_METRICS_LISTEN`: unset or empty is off.
///
/// # Errors
///
/// A value that is not `HOST:PORT`.
pub fn metrics_listen_from_setting(setting: Option<&str>) -> Result<Option<String>, ConfigError> {
    match setting.map(str::trim) {
        None | Some("") => Ok(None),
        Some(addr)
            if addr
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok()) =>
        {
            Ok(Some(addr.to_owned()))
        }
        Some(other) => Err(ConfigError(format!(
            "AIRMY_METRICS_LISTEN must be HOST:PORT, got {other:?}"
        ))),
    }
}

/// Logs to standard error (standard output carries only the contract's lines) in `format`,
/// filtered by `RUST_LOG` (default `info`), in colour only when standard error is a terminal.
pub fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let set = std::env::var_os("RUST_LOG").is_some_and(|v| !v.is_empty());
    let (filter, invalid) = match EnvFilter::try_from_default_env() {
        Ok(filter) => (filter, None),
        Err(err) => (EnvFilter::new("info"), set.then(|| err.to_string())),
    };
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(true);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
    if let Some(err) = invalid {
        tracing::warn!(target: "airmy_receiver", error = %err, "RUST_LOG is not a valid filter; logging at info");
    }
}

/// Installs the Prometheus recorder as the process's `metrics` recorder and serves
/// `GET /metrics` on `listen`; returns the bound address.
///
/// # Errors
///
/// When the address cannot be bound, or a recorder is already installed.
#[cfg(feature = "metrics")]
pub async fn serve_metrics(listen: &str) -> Result<SocketAddr, ConfigError> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|err| {
        ConfigError(format!(
            "AIRMY_METRICS_LISTEN: cannot listen on {listen}: {err}"
        ))
    })?;
    let addr = listener
        .local_addr()
        .map_err(|err| ConfigError(format!("AIRMY_METRICS_LISTEN: no local address: {err}")))?;
    let buckets = |name: &str, values: &[f64]| (Matcher::Full(name.to_owned()), values.to_vec());
    let mut builder = PrometheusBuilder::new();
    for (matcher, values) in [
        buckets(
            airmy_verify::observe::VERIFICATION_SECONDS,
            &[1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1],
        ),
        buckets(
            airmy_verify::observe::BODY_BYTES,
            &[
                256.0,
                1024.0,
                4096.0,
                16384.0,
                65536.0,
                262_144.0,
                1_048_576.0,
                2_097_152.0,
            ],
        ),
        buckets(
            airmy_verify::observe::DELIVERY_LAG_SECONDS,
            &[0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 240.0, 300.0],
        ),
    ] {
        builder = builder
            .set_buckets_for_metric(matcher, &values)
            .map_err(|err| ConfigError(format!("AIRMY_METRICS_LISTEN: {err}")))?;
    }
    let handle = builder
        .install_recorder()
        .map_err(|err| ConfigError(format!("AIRMY_METRICS_LISTEN: {err}")))?;
    airmy_verify::observe::metrics::describe();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    handle.render(),
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(target: "airmy_receiver", error = %err, "the metrics server stopped");
        }
    });
    Ok(addr)
}

/// Without the `metrics` feature there is no recorder to serve.
///
/// # Errors
///
/// Always.
#[cfg(not(feature = "metrics"))]
pub async fn serve_metrics(_listen: &str) -> Result<SocketAddr, ConfigError> {
    Err(ConfigError(
        "AIRMY_METRICS_LISTEN: this build has no `metrics` feature".to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_format_is_text_or_json() {
        assert_eq!(
            LogFormat::from_setting(None).expect("default"),
            LogFormat::Text
        );
        assert_eq!(
            LogFormat::from_setting(Some("json")).expect("json"),
            LogFormat::Json
        );
        for bad in ["JSON", "logfmt", "yes"] {
            let err = LogFormat::from_setting(Some(bad)).expect_err(bad);
            assert!(err.to_string().contains("AIRMY_LOG_FORMAT"), "{err}");
        }
    }

    #[test]
    fn the_metrics_address_is_host_and_port() {
        assert_eq!(metrics_listen_from_setting(None).expect("off"), None);
        assert_eq!(
            metrics_listen_from_setting(Some("127.0.0.1:0")).expect("valid"),
            Some("127.0.0.1:0".to_owned())
        );
        for bad in ["9090", ":9090", "localhost:http", "127.0.0.1:70000"] {
            assert!(metrics_listen_from_setting(Some(bad)).is_err(), "{bad}");
        }
    }
}
