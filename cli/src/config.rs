//! The configuration file: TOML, then `LOGLAKE_*` environment variables, then flags.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use loglake_agent::AgentConfig;
use loglake_compactor::CompactorConfig;
use loglake_ingest::{IngestConfig, KafkaConfig};
use loglake_lake::LakeConfig;
use loglake_query::ServeConfig;
use serde::Deserialize;
use toml::Value;

/// The whole file. Sections a command does not use may be absent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Every command but `agent` needs it.
    #[serde(default)]
    pub lake: Option<LakeConfig>,
    #[serde(default)]
    pub kafka: Option<KafkaConfig>,
    #[serde(default)]
    pub ingest: IngestConfig,
    #[serde(default)]
    pub compactor: CompactorConfig,
    #[serde(default)]
    pub serve: ServeConfig,
    #[serde(default)]
    pub agent: AgentConfig,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Str,
    Bool,
    Int,
    List,
}

/// Every environment override: variable, key path, kind. Documented in config/loglake.example.toml.
const ENV_OVERRIDES: &[(&str, &str, Kind)] = &[
    ("LOGLAKE_LAKE_URL", "lake.url", Kind::Str),
    (
        "LOGLAKE_LAKE_SINGLE_WRITER",
        "lake.single_writer",
        Kind::Bool,
    ),
    ("LOGLAKE_S3_ENDPOINT", "lake.s3.endpoint", Kind::Str),
    ("LOGLAKE_S3_REGION", "lake.s3.region", Kind::Str),
    (
        "LOGLAKE_S3_ACCESS_KEY_ID",
        "lake.s3.access_key_id",
        Kind::Str,
    ),
    (
        "LOGLAKE_S3_SECRET_ACCESS_KEY",
        "lake.s3.secret_access_key",
        Kind::Str,
    ),
    ("LOGLAKE_S3_ALLOW_HTTP", "lake.s3.allow_http", Kind::Bool),
    (
        "LOGLAKE_S3_UNSIGNED_PAYLOAD",
        "lake.s3.unsigned_payload",
        Kind::Bool,
    ),
    ("LOGLAKE_KAFKA_BROKERS", "kafka.brokers", Kind::Str),
    ("LOGLAKE_KAFKA_GROUP_ID", "kafka.group_id", Kind::Str),
    ("LOGLAKE_KAFKA_TOPICS", "kafka.topics", Kind::List),
    (
        "LOGLAKE_KAFKA_TOPIC_PATTERN",
        "kafka.topic_pattern",
        Kind::Str,
    ),
    ("LOGLAKE_KAFKA_AUTH", "kafka.auth", Kind::Str),
    ("LOGLAKE_KAFKA_AWS_REGION", "kafka.aws_region", Kind::Str),
    (
        "LOGLAKE_KAFKA_SECURITY_PROTOCOL",
        "kafka.security_protocol",
        Kind::Str,
    ),
    (
        "LOGLAKE_KAFKA_SASL_MECHANISM",
        "kafka.sasl_mechanism",
        Kind::Str,
    ),
    (
        "LOGLAKE_KAFKA_SASL_USERNAME",
        "kafka.sasl_username",
        Kind::Str,
    ),
    (
        "LOGLAKE_KAFKA_SASL_PASSWORD",
        "kafka.sasl_password",
        Kind::Str,
    ),
    (
        "LOGLAKE_KAFKA_SSL_CA_LOCATION",
        "kafka.ssl_ca_location",
        Kind::Str,
    ),
    (
        "LOGLAKE_KAFKA_SSL_CERTIFICATE_LOCATION",
        "kafka.ssl_certificate_location",
        Kind::Str,
    ),
    (
        "LOGLAKE_KAFKA_SSL_KEY_LOCATION",
        "kafka.ssl_key_location",
        Kind::Str,
    ),
    (
        "LOGLAKE_KAFKA_SSL_KEY_PASSWORD",
        "kafka.ssl_key_password",
        Kind::Str,
    ),
    (
        "LOGLAKE_INGEST_MAX_FILE_SIZE",
        "ingest.max_file_size",
        Kind::Str,
    ),
    (
        "LOGLAKE_INGEST_MAX_LATENCY",
        "ingest.max_latency",
        Kind::Str,
    ),
    (
        "LOGLAKE_INGEST_MEMORY_BUDGET",
        "ingest.memory_budget",
        Kind::Str,
    ),
    (
        "LOGLAKE_INGEST_METRICS_LISTEN",
        "ingest.metrics_listen",
        Kind::Str,
    ),
    (
        "LOGLAKE_INGEST_SCHEMAS_DIR",
        "ingest.schemas_dir",
        Kind::Str,
    ),
    (
        "LOGLAKE_INGEST_SHUTDOWN_GRACE",
        "ingest.shutdown_grace",
        Kind::Str,
    ),
    (
        "LOGLAKE_COMPACTOR_TARGET_FILE_SIZE",
        "compactor.target_file_size",
        Kind::Str,
    ),
    ("LOGLAKE_COMPACTOR_GRACE", "compactor.grace", Kind::Str),
    (
        "LOGLAKE_COMPACTOR_MIN_FILES",
        "compactor.min_files",
        Kind::Int,
    ),
    (
        "LOGLAKE_COMPACTOR_MAX_FAN_IN",
        "compactor.max_fan_in",
        Kind::Int,
    ),
    (
        "LOGLAKE_COMPACTOR_RETENTION",
        "compactor.retention",
        Kind::Str,
    ),
    (
        "LOGLAKE_COMPACTOR_VACUUM_DELAY",
        "compactor.vacuum_delay",
        Kind::Str,
    ),
    (
        "LOGLAKE_COMPACTOR_VACUUM_MIN_DELAY",
        "compactor.vacuum_min_delay",
        Kind::Str,
    ),
    (
        "LOGLAKE_COMPACTOR_LOG_RETENTION",
        "compactor.log_retention",
        Kind::Str,
    ),
    (
        "LOGLAKE_COMPACTOR_CHECKPOINT_EVERY",
        "compactor.checkpoint_every",
        Kind::Int,
    ),
    (
        "LOGLAKE_COMPACTOR_TABLE_CONCURRENCY",
        "compactor.table_concurrency",
        Kind::Int,
    ),
    (
        "LOGLAKE_COMPACTOR_METRICS_LISTEN",
        "compactor.metrics_listen",
        Kind::Str,
    ),
    (
        "LOGLAKE_INGEST_UNDECODABLE_ATTEMPTS",
        "ingest.undecodable_attempts",
        Kind::Int,
    ),
    (
        "LOGLAKE_INGEST_MAX_OPEN_PARTITIONS",
        "ingest.max_open_partitions",
        Kind::Int,
    ),
    (
        "LOGLAKE_INGEST_ACCEPT_RECREATED_TOPICS",
        "ingest.accept_recreated_topics",
        Kind::List,
    ),
    (
        "LOGLAKE_INGEST_STALL_AFTER",
        "ingest.stall_after",
        Kind::Str,
    ),
    (
        "LOGLAKE_INGEST_STALL_UNHEALTHY_AFTER",
        "ingest.stall_unhealthy_after",
        Kind::Str,
    ),
    ("LOGLAKE_SERVE_HTTP_LISTEN", "serve.http_listen", Kind::Str),
    ("LOGLAKE_SERVE_TOKENS", "serve.tokens", Kind::List),
    ("LOGLAKE_SERVE_PG_LISTEN", "serve.pg_listen", Kind::Str),
    ("LOGLAKE_SERVE_PG_TLS_CERT", "serve.pg_tls_cert", Kind::Str),
    ("LOGLAKE_SERVE_PG_TLS_KEY", "serve.pg_tls_key", Kind::Str),
    (
        "LOGLAKE_SERVE_FLIGHT_LISTEN",
        "serve.flight_listen",
        Kind::Str,
    ),
    (
        "LOGLAKE_SERVE_ALLOW_ANONYMOUS",
        "serve.allow_anonymous",
        Kind::Bool,
    ),
    (
        "LOGLAKE_SERVE_QUERY_TIMEOUT",
        "serve.query_timeout",
        Kind::Str,
    ),
    (
        "LOGLAKE_SERVE_MAX_CONCURRENT_QUERIES",
        "serve.max_concurrent_queries",
        Kind::Int,
    ),
    (
        "LOGLAKE_SERVE_MEMORY_PER_QUERY",
        "serve.memory_per_query",
        Kind::Str,
    ),
    (
        "LOGLAKE_SERVE_MAX_RESULT_ROWS",
        "serve.max_result_rows",
        Kind::Int,
    ),
    (
        "LOGLAKE_SERVE_MAX_RESULT_BYTES",
        "serve.max_result_bytes",
        Kind::Str,
    ),
    (
        "LOGLAKE_SERVE_MAX_STATEMENT_SIZE",
        "serve.max_statement_size",
        Kind::Str,
    ),
    ("LOGLAKE_SERVE_SPILL_DIR", "serve.spill_dir", Kind::Str),
    (
        "LOGLAKE_SERVE_MAX_SPILL_SIZE",
        "serve.max_spill_size",
        Kind::Str,
    ),
    (
        "LOGLAKE_SERVE_CORS_ORIGINS",
        "serve.cors_origins",
        Kind::List,
    ),
    ("LOGLAKE_SERVE_LATE_GRACE", "serve.late_grace", Kind::Str),
    ("LOGLAKE_AGENT_STATE_DIR", "agent.state_dir", Kind::Str),
    (
        "LOGLAKE_AGENT_METRICS_LISTEN",
        "agent.metrics_listen",
        Kind::Str,
    ),
    ("LOGLAKE_AGENT_HOST", "agent.host", Kind::Str),
    (
        "LOGLAKE_SERVE_QUERY_THREADS",
        "serve.query_threads",
        Kind::Int,
    ),
];

/// A `key.path = value` from a flag.
#[derive(Debug, Clone)]
pub struct Override {
    pub path: String,
    pub value: Value,
}

impl Override {
    pub fn str(path: &str, v: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            value: Value::String(v.into()),
        }
    }
}

fn set_path(root: &mut Value, path: &str, value: Value) -> anyhow::Result<()> {
    let mut current = root;
    let parts: Vec<&str> = path.split('.').collect();
    for part in &parts[..parts.len() - 1] {
        let table = current
            .as_table_mut()
            .with_context(|| format!("{path}: {part} is not a table"))?;
        current = table
            .entry(part.to_string())
            .or_insert_with(|| Value::Table(Default::default()));
    }
    let table = current
        .as_table_mut()
        .with_context(|| format!("{path}: parent is not a table"))?;
    table.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

fn env_value(var: &str, raw: &str, kind: Kind) -> anyhow::Result<Value> {
    Ok(match kind {
        Kind::Str => Value::String(raw.to_string()),
        Kind::Bool => match raw.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Value::Boolean(true),
            "0" | "false" | "no" | "off" | "" => Value::Boolean(false),
            _ => bail!("{var}={raw:?}: expected true or false"),
        },
        Kind::Int => Value::Integer(
            raw.trim()
                .parse()
                .with_context(|| format!("{var}={raw:?}: expected a whole number"))?,
        ),
        Kind::List => Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        ),
    })
}

/// Loads `file` (if any), applies `env` (`LOGLAKE_*` pairs) and `flags`, and checks the
/// result against the typed configuration. Errors name the key and what was expected.
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    flags: &[Override],
) -> anyhow::Result<Config> {
    let mut root = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("could not read config file {}", path.display()))?;
            text.parse::<toml::Table>().map(Value::Table).map_err(|e| {
                anyhow::anyhow!("config file {} is not valid TOML: {e}", path.display())
            })?
        }
        None => Value::Table(Default::default()),
    };
    for (var, raw) in env {
        if !var.starts_with("LOGLAKE_") {
            continue;
        }
        match ENV_OVERRIDES.iter().find(|(name, _, _)| *name == var) {
            Some((_, path, kind)) => set_path(&mut root, path, env_value(&var, &raw, *kind)?)?,
            None if ["LOGLAKE_CONFIG", "LOGLAKE_LOG", "LOGLAKE_LOG_FORMAT"]
                .contains(&var.as_str()) => {}
            None => tracing::debug!(
                var,
                "environment variable is not a loglake setting; ignored"
            ),
        }
    }
    for o in flags {
        set_path(&mut root, &o.path, o.value.clone())?;
    }
    // A [lake] without its url (only LOGLAKE_S3_* in the environment, say) counts as no
    // [lake]: the agent does not need one, and every other command says it is required.
    if let Some(table) = root.as_table_mut() {
        if table
            .get("lake")
            .and_then(Value::as_table)
            .is_some_and(|lake| !lake.contains_key("url"))
        {
            table.remove("lake");
        }
    }
    let source = file
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "environment".into());
    let config: Config = serde_path_to_error::deserialize(root).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            anyhow::anyhow!("invalid configuration ({source}): {inner}")
        } else {
            anyhow::anyhow!("invalid configuration ({source}): {path}: {inner}")
        }
    })?;
    config.ingest.validate()?;
    config.compactor.validate()?;
    if let Some(k) = &config.kafka {
        // The subscription is checked by `ingest` alone: the agent names its topics per input.
        k.validate_security()?;
    }
    Ok(config)
}

/// `--config`, else `LOGLAKE_CONFIG`, else `./loglake.toml` if it exists.
pub fn resolve_path(flag: Option<PathBuf>) -> Option<PathBuf> {
    flag.or_else(|| std::env::var_os("LOGLAKE_CONFIG").map(PathBuf::from))
        .or_else(|| Some(PathBuf::from("loglake.toml")).filter(|p| p.exists()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn example_file_parses() {
        let example = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../config/loglake.example.toml"
        );
        let c = load(Some(Path::new(example)), [], &[]).unwrap();
        assert_eq!(c.kafka.unwrap().topics, vec!["app-logs".to_string()]);
        assert_eq!(c.ingest.max_file_size, bytesize::ByteSize::mib(128));
    }

    #[test]
    fn precedence_is_flags_env_file() {
        let f =
            write("[lake]\nurl = \"file:///a\"\n[kafka]\nbrokers = \"x:1\"\ntopics = [\"t\"]\n");
        let env = [
            ("LOGLAKE_LAKE_URL".to_string(), "file:///b".to_string()),
            ("LOGLAKE_KAFKA_TOPICS".into(), "u, v".into()),
        ];
        let c = load(Some(f.path()), env.clone(), &[]).unwrap();
        assert_eq!(c.lake.unwrap().url, "file:///b");
        assert_eq!(c.kafka.as_ref().unwrap().topics, vec!["u", "v"]);
        let c = load(
            Some(f.path()),
            env,
            &[Override::str("lake.url", "file:///c")],
        )
        .unwrap();
        assert_eq!(c.lake.unwrap().url, "file:///c");
    }

    #[test]
    fn errors_name_the_key() {
        let f = write("[lake]\nurl = \"file:///a\"\n[ingest]\nmax_latency = \"soon\"\n");
        let err = load(Some(f.path()), [], &[]).unwrap_err().to_string();
        assert!(err.contains("ingest.max_latency"), "{err}");
        let f = write("[lake]\nurl = \"file:///a\"\nurll = 1\n");
        let err = load(Some(f.path()), [], &[]).unwrap_err().to_string();
        assert!(err.contains("urll"), "{err}");
        // A [lake] without its url is no [lake]: commands that need one say so.
        let f = write("[lake]\n[lake.s3]\nregion = \"x\"\n");
        assert!(load(Some(f.path()), [], &[]).unwrap().lake.is_none());
        let err = load(
            None,
            [("LOGLAKE_LAKE_SINGLE_WRITER".into(), "maybe".into())],
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("LOGLAKE_LAKE_SINGLE_WRITER"), "{err}");
    }

    #[test]
    fn kafka_password_comes_from_env_and_is_redacted() {
        let f = write(
            "[lake]\nurl = \"file:///a\"\n[kafka]\nbrokers = \"b:1\"\ntopics = [\"t\"]\n\
             security_protocol = \"sasl_plaintext\"\nsasl_mechanism = \"SCRAM-SHA-256\"\n\
             sasl_username = \"archiver\"\n",
        );
        let env = [(
            "LOGLAKE_KAFKA_SASL_PASSWORD".to_string(),
            "hunter2".to_string(),
        )];
        let c = load(Some(f.path()), env, &[]).unwrap();
        let kafka = c.kafka.unwrap();
        assert_eq!(kafka.sasl_password.as_ref().unwrap().expose(), "hunter2");
        assert!(!format!("{kafka:?}").contains("hunter2"));
        let err = load(Some(f.path()), [], &[]).unwrap_err().to_string();
        assert!(err.contains("sasl_password"), "{err}");
    }

    #[test]
    fn secrets_are_redacted() {
        let f = write("[lake]\nurl = \"s3://b\"\n[lake.s3]\nsecret_access_key = \"hunter2\"\n");
        let c = load(Some(f.path()), [], &[]).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
