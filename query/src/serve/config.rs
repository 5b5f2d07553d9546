//! `[serve]`: typed, documented, validated.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use loglake_lake::Secret;
use serde::{Deserialize, Serialize};

use crate::limits::Limits;

/// `[serve]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// `host:port` of the HTTP API, `/metrics`, `/healthz` and `/readyz`.
    pub http_listen: String,
    /// `host:port` for the Postgres wire protocol (psql, drivers, BI tools); unset: off.
    pub pg_listen: Option<String>,
    /// PEM certificate chain and private key: with both set, Postgres clients may (and with
    /// `sslmode=require` do) connect over TLS.
    pub pg_tls_cert: Option<PathBuf>,
    pub pg_tls_key: Option<PathBuf>,
    /// `host:port` for Arrow Flight SQL (ADBC, the Flight SQL JDBC driver); unset: off.
    pub flight_listen: Option<String>,
    /// Bearer tokens that may query. With none, the service only starts on a loopback
    /// address, unless `allow_anonymous = true`.
    pub tokens: Vec<Secret>,
    /// Serve without tokens on a non-loopback address (behind an authenticating proxy).
    pub allow_anonymous: bool,
    /// A query is stopped after this long ("5m"); a request may ask for less.
    #[serde(with = "humantime_serde")]
    pub query_timeout: Duration,
    /// Queries running at once; one more is answered 429.
    pub max_concurrent_queries: usize,
    /// Memory one query may hold ("1GiB"): sorts and aggregations spill past it, other
    /// operators fail with 503 "resources exhausted". The service's own memory stays bounded
    /// by this times `max_concurrent_queries`.
    pub memory_per_query: ByteSize,
    /// Rows an answer holds at most; more are cut off and the answer says it was truncated.
    pub max_result_rows: u64,
    /// Bytes a buffered answer (`json`, `parquet`) holds at most; past it, truncated.
    pub max_result_bytes: ByteSize,
    /// A longer statement is answered 413.
    pub max_statement_size: ByteSize,
    /// Where queries spill (default: the OS temp directory).
    pub spill_dir: Option<PathBuf>,
    /// All queries' spill files together stay under this ("10GiB").
    pub max_spill_size: ByteSize,
    /// Origins allowed to call the API from a browser (CORS); empty: CORS off.
    pub cors_origins: Vec<String>,
    /// How late a record may reach Kafka after its event time and still be expected:
    /// `/v1/tables` reports `complete_through` this far behind the slowest partition.
    #[serde(with = "humantime_serde")]
    pub late_grace: Duration,
    /// Threads of the query runtime (0: one per core). `/healthz` and accepting connections
    /// run on their own, so they answer while queries keep every query thread busy.
    pub query_threads: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            http_listen: "127.0.0.1:8080".into(),
            pg_listen: None,
            pg_tls_cert: None,
            pg_tls_key: None,
            flight_listen: None,
            tokens: Vec::new(),
            allow_anonymous: false,
            query_timeout: Duration::from_secs(300),
            max_concurrent_queries: 8,
            memory_per_query: ByteSize::gib(1),
            max_result_rows: 1_000_000,
            max_result_bytes: ByteSize::mib(256),
            max_statement_size: ByteSize::mib(1),
            spill_dir: None,
            max_spill_size: ByteSize::gib(10),
            cors_origins: Vec::new(),
            late_grace: Duration::from_secs(300),
            query_threads: 0,
        }
    }
}

impl ServeConfig {
    /// Checks what serde cannot: the address, auth on exposed addresses, non-zero limits.
    pub fn validate(&self) -> Result<SocketAddr, String> {
        let addr: SocketAddr = self.http_listen.parse().map_err(|e| {
            format!(
                "serve.http_listen: {:?} is not host:port ({e})",
                self.http_listen
            )
        })?;
        if self.tokens.is_empty() && !addr.ip().is_loopback() && !self.allow_anonymous {
            return Err(format!(
                "serve.http_listen is {addr}, reachable from other hosts, and serve.tokens is empty: \
                 set serve.tokens (or LOGLAKE_SERVE_TOKENS), or allow_anonymous = true behind a proxy that authenticates"
            ));
        }
        for (key, listen) in [
            ("pg_listen", &self.pg_listen),
            ("flight_listen", &self.flight_listen),
        ] {
            let Some(listen) = listen else { continue };
            let other: SocketAddr = listen
                .parse()
                .map_err(|e| format!("serve.{key}: {listen:?} is not host:port ({e})"))?;
            if self.tokens.is_empty() && !other.ip().is_loopback() && !self.allow_anonymous {
                return Err(format!(
                    "serve.{key} is {other}, reachable from other hosts, and serve.tokens is empty: \
                     set serve.tokens (or LOGLAKE_SERVE_TOKENS), or allow_anonymous = true"
                ));
            }
        }
        if self.pg_tls_cert.is_some() != self.pg_tls_key.is_some() {
            return Err("serve.pg_tls_cert and serve.pg_tls_key: set both or neither".into());
        }
        if self.tokens.iter().any(|t| t.expose().trim().is_empty()) {
            return Err("serve.tokens: a token is empty".into());
        }
        if self.max_concurrent_queries == 0 {
            return Err("serve.max_concurrent_queries must be at least 1".into());
        }
        if self.query_timeout.is_zero() {
            return Err("serve.query_timeout must be longer than 0s".into());
        }
        if self.memory_per_query.as_u64() < 1 << 20 {
            return Err("serve.memory_per_query must be at least 1MiB".into());
        }
        for origin in &self.cors_origins {
            if origin != "*" && url::Url::parse(origin).is_err() {
                return Err(format!(
                    "serve.cors_origins: {origin:?} is not an origin (https://host[:port])"
                ));
            }
        }
        Ok(addr)
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_statement_bytes: self.max_statement_size.as_u64() as usize,
            query_timeout: self.query_timeout,
            memory_per_query: self.memory_per_query.as_u64() as usize,
            max_result_rows: Some(self.max_result_rows),
            spill_dir: self.spill_dir.clone(),
            max_spill_bytes: self.max_spill_size.as_u64(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exposed_address_needs_tokens_or_an_explicit_opt_out() {
        let mut c = ServeConfig::default();
        assert!(c.validate().is_ok());
        c.http_listen = "0.0.0.0:8080".into();
        let err = c.validate().unwrap_err();
        assert!(err.contains("serve.tokens"), "{err}");
        c.allow_anonymous = true;
        assert!(c.validate().is_ok());
        c.allow_anonymous = false;
        c.tokens = vec![Secret::new("s3cret")];
        assert!(c.validate().is_ok());
        assert!(!format!("{c:?}").contains("s3cret"));
        c.http_listen = "nope".into();
        assert!(c.validate().unwrap_err().contains("host:port"));
    }
}
