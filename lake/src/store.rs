//! Connecting to the lake: URL, credentials, the object store, and table discovery.

use std::collections::HashMap;
use std::sync::{Arc, Once};

use deltalake::{DeltaTable, DeltaTableBuilder};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::ObjectStore;
use url::Url;

use crate::append::AppendTable;
use crate::config::LakeConfig;
use crate::error::LakeError;
use crate::naming::{sql_table_name, TableInfo};
use crate::selfcheck;

/// A connected lake. Cheap to clone.
#[derive(Clone)]
pub struct Lake {
    root: Url,
    options: HashMap<String, String>,
    store: Arc<dyn ObjectStore>,
    /// The lake root inside `store` (the S3 prefix; empty for a local directory).
    prefix: Path,
    single_writer: bool,
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lake")
            .field("root", &self.root.as_str())
            .field("single_writer", &self.single_writer)
            .finish_non_exhaustive()
    }
}

fn register_s3() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| deltalake::aws::register_handlers(None));
}

/// Parses `lake.url`: `s3://bucket[/prefix]`, `file:///abs/path`, or a plain path.
fn parse_root(raw: &str) -> Result<Url, LakeError> {
    let invalid = |reason: &str| LakeError::InvalidUrl {
        url: raw.to_string(),
        reason: reason.to_string(),
    };
    let url = if raw.contains("://") {
        Url::parse(raw).map_err(|e| invalid(&e.to_string()))?
    } else {
        let path = std::path::absolute(raw).map_err(|e| invalid(&e.to_string()))?;
        Url::from_directory_path(&path).map_err(|_| invalid("not an absolute path"))?
    };
    match url.scheme() {
        "s3" | "s3a" => {
            if url.host_str().unwrap_or_default().is_empty() {
                return Err(invalid("an s3:// URL needs a bucket: s3://bucket/prefix"));
            }
        }
        "file" => {}
        other => {
            return Err(invalid(&format!(
                "scheme {other:?} is not supported; use s3:// or file://"
            )))
        }
    }
    let mut url = url;
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

impl Lake {
    /// Connects to the lake named by `config`: creates a local directory if needed, builds
    /// the object store, and registers S3 support with delta-rs. Does not yet check the
    /// store's put-if-absent support: see [`Lake::ensure_safe_for_writes`].
    pub async fn connect(config: &LakeConfig) -> Result<Self, LakeError> {
        let root = parse_root(&config.url)?;
        let store_err = |source| LakeError::Store {
            url: root.to_string(),
            source,
        };
        let (store, prefix, options): (Arc<dyn ObjectStore>, Path, HashMap<String, String>) =
            if root.scheme() == "file" {
                let dir = root.to_file_path().map_err(|_| LakeError::InvalidUrl {
                    url: config.url.clone(),
                    reason: "not a local path".into(),
                })?;
                std::fs::create_dir_all(&dir).map_err(|e| {
                    store_err(object_store::Error::Generic {
                        store: "LocalFileSystem",
                        source: Box::new(e),
                    })
                })?;
                let store = LocalFileSystem::new_with_prefix(&dir).map_err(store_err)?;
                (Arc::new(store), Path::default(), HashMap::new())
            } else {
                register_s3();
                let options = s3_options(config);
                let mut builder = AmazonS3Builder::from_env().with_url(root.as_str());
                for (k, v) in &options {
                    if let Ok(key) = k.to_ascii_lowercase().parse() {
                        builder = builder.with_config(key, v);
                    }
                }
                let store = builder.build().map_err(store_err)?;
                // Decoded as delta-rs decodes a table URL's path: `s3://b/my%20lake` is the
                // prefix `my lake` on both sides (`Path::from` would escape the `%` again).
                let prefix =
                    Path::from_url_path(root.path()).map_err(|e| LakeError::InvalidUrl {
                        url: config.url.clone(),
                        reason: e.to_string(),
                    })?;
                (Arc::new(store), prefix, options)
            };
        Ok(Self {
            root,
            options,
            store,
            prefix,
            single_writer: config.single_writer,
        })
    }

    pub fn root(&self) -> &Url {
        &self.root
    }

    /// Options handed to delta-rs for every table of this lake.
    pub fn storage_options(&self) -> &HashMap<String, String> {
        &self.options
    }

    /// The object store, rooted at the bucket (for S3) or the lake directory (local).
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// `path` under the lake root, as a path inside [`Lake::object_store`].
    pub fn path(&self, path: &str) -> Path {
        let mut p = self.prefix.clone();
        for part in path.split('/').filter(|s| !s.is_empty()) {
            p = p.clone().join(part);
        }
        p
    }

    /// Refuses a store that ignores put-if-absent, unless `single_writer` acknowledges the
    /// risk. The verdict is cached per store URL for the life of the process.
    pub async fn ensure_safe_for_writes(&self) -> Result<(), LakeError> {
        if self.single_writer {
            tracing::warn!(lake = %self.root, "lake.single_writer is set: store self-check skipped");
            return Ok(());
        }
        selfcheck::check_cached(self).await
    }

    /// Probes the store for put-if-absent now, whatever `single_writer` says.
    pub async fn check_store(&self) -> Result<(), LakeError> {
        selfcheck::check_now(self).await
    }

    /// One listing of the lake root: does the store answer, with these credentials?
    pub async fn ping(&self) -> Result<(), LakeError> {
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        self.store
            .list_with_delimiter(prefix)
            .await
            .map(|_| ())
            .map_err(|source| LakeError::Store {
                url: self.root.to_string(),
                source,
            })
    }

    /// The URL of the table in directory `dir` under the root.
    pub fn table_url(&self, dir: &str) -> Url {
        self.root
            .join(&format!("{}/", urlencode_segment(dir)))
            .expect("a directory name joins onto a valid root URL")
    }

    /// A builder for the table in `dir`. On S3 every table shares the lake's one store: one
    /// HTTP client (one connection pool, the root certificates loaded once) and one credential
    /// provider per process, however many tables are opened. Left to itself delta-rs builds a
    /// store per table handle, each with a fresh client, and on AWS resolves credentials
    /// through the SDK's chain again for each. The local lake's store is rooted at the lake
    /// directory, not at `/` as delta-rs needs: delta-rs builds its own there (no client).
    fn builder(&self, dir: &str) -> Result<DeltaTableBuilder, LakeError> {
        let url = self.table_url(dir);
        let shared = self.root.scheme() != "file";
        DeltaTableBuilder::from_url(url.clone())
            .map(|b| {
                let b = b.with_storage_options(self.options.clone());
                if shared {
                    b.with_storage_backend(self.store.clone(), url)
                } else {
                    b
                }
            })
            .map_err(|e| LakeError::delta(dir, e))
    }

    /// Whether the table in `dir` has a Delta log.
    async fn has_log(&self, dir: &str) -> Result<bool, LakeError> {
        let log = self.path(&format!("{dir}/_delta_log"));
        let listing = self
            .store
            .list_with_delimiter(Some(&log))
            .await
            .map_err(|source| LakeError::Store {
                url: self.table_url(dir).to_string(),
                source,
            })?;
        Ok(!listing.objects.is_empty())
    }

    /// Opens the latest version of a table; `None` if the table does not exist yet.
    pub async fn open_table(&self, dir: &str) -> Result<Option<DeltaTable>, LakeError> {
        if !self.has_log(dir).await? {
            return Ok(None);
        }
        match self.builder(dir)?.load().await {
            Ok(t) => Ok(Some(t)),
            Err(deltalake::DeltaTableError::NotATable(_)) => Ok(None),
            Err(e) => Err(LakeError::delta(dir, e)),
        }
    }

    /// Opens the latest version of a table to append to, without its file list; `None` if
    /// the table does not exist yet.
    pub async fn open_append(&self, dir: &str) -> Result<Option<AppendTable>, LakeError> {
        if !self.has_log(dir).await? {
            return Ok(None);
        }
        let log_store = self
            .builder(dir)?
            .build_storage()
            .map_err(|e| LakeError::delta(dir, e))?;
        match AppendTable::open(log_store).await {
            Ok(t) => Ok(Some(t)),
            Err(LakeError::Delta { source, .. })
                if matches!(*source, deltalake::DeltaTableError::NotATable(_)) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Opens a table to append to, creating it with `schema` and `partition_columns` if it
    /// does not exist. Safe to race: a writer that loses the creation race opens the winner's
    /// table.
    pub async fn open_or_create(
        &self,
        dir: &str,
        schema: &arrow::datatypes::Schema,
        partition_columns: &[&str],
    ) -> Result<AppendTable, LakeError> {
        use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
        if let Some(t) = self.open_append(dir).await? {
            return Ok(t);
        }
        let columns: deltalake::kernel::StructType =
            schema.try_into_kernel().map_err(|e| LakeError::Encode {
                table: dir.to_string(),
                source: e,
            })?;
        let log_store = self
            .builder(dir)?
            .build_storage()
            .map_err(|e| LakeError::delta(dir, e))?;
        let created = deltalake::operations::create::CreateBuilder::new()
            .with_log_store(log_store)
            .with_table_name(sql_table_name(dir))
            .with_columns(columns.fields().cloned())
            .with_partition_columns(partition_columns.iter().copied())
            .with_configuration_property(deltalake::TableProperty::CheckpointInterval, Some("50"))
            .with_save_mode(deltalake::protocol::SaveMode::Ignore)
            .await;
        if let Ok(t) = &created {
            if t.version().is_some() {
                tracing::info!(table = dir, "created table");
            }
        }
        // Created, lost the creation race (Ignore returns an unloaded handle, or an error), or
        // the store refused: the table if it now exists, else the reason creation failed.
        match (self.open_append(dir).await, created) {
            (Ok(Some(t)), _) => Ok(t),
            (_, Err(e)) => Err(LakeError::delta(dir, e)),
            (Err(e), Ok(_)) => Err(e),
            (Ok(None), Ok(_)) => Err(LakeError::delta(
                dir,
                deltalake::DeltaTableError::NotATable(dir.into()),
            )),
        }
    }

    /// Every Delta table directly under the lake root.
    pub async fn list_tables(&self) -> Result<Vec<TableInfo>, LakeError> {
        self.list_tables_where(|_| true).await
    }

    /// The Delta tables directly under the lake root whose directory name `keep` accepts:
    /// one listing of the root, then one of each kept directory's `_delta_log` (sixteen at a
    /// time: a lake of thousands of topics is not probed one round trip after another).
    pub async fn list_tables_where(
        &self,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Vec<TableInfo>, LakeError> {
        use futures::StreamExt as _;
        let store_err = |source| LakeError::Store {
            url: self.root.to_string(),
            source,
        };
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let listing = self
            .store
            .list_with_delimiter(prefix)
            .await
            .map_err(store_err)?;
        let candidates: Vec<(String, Path)> = listing
            .common_prefixes
            .into_iter()
            .filter_map(|dir| {
                let name = dir.filename()?.to_string();
                let hidden = name.starts_with('_') || name.starts_with('.');
                (!hidden && keep(&name)).then(|| (name, dir.clone().join("_delta_log")))
            })
            .collect();
        // A directory whose log cannot be listed is an error, not "no table": a pass or a
        // query must not skip a table because of one failed request.
        let probed: Vec<Result<Option<TableInfo>, LakeError>> = futures::stream::iter(candidates)
            .map(|(name, log)| async move {
                let listing =
                    self.store
                        .list_with_delimiter(Some(&log))
                        .await
                        .map_err(|source| LakeError::Store {
                            url: self.table_url(&name).to_string(),
                            source,
                        })?;
                Ok((!listing.objects.is_empty()).then(|| TableInfo {
                    sql_name: sql_table_name(&name),
                    url: self.table_url(&name),
                    dir: name,
                }))
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let mut tables = probed
            .into_iter()
            .filter_map(Result::transpose)
            .collect::<Result<Vec<_>, _>>()?;
        tables.sort_by(|a, b| a.dir.cmp(&b.dir));
        Ok(tables)
    }
}

fn urlencode_segment(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' => c.to_string(),
            c => format!("%{:02X}", c as u32),
        })
        .collect()
}

/// delta-rs storage options for an S3 lake: the config file first, `AWS_*` env for the rest.
fn s3_options(config: &LakeConfig) -> HashMap<String, String> {
    let mut options = HashMap::new();
    for key in [
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ALLOW_HTTP",
        "AWS_UNSIGNED_PAYLOAD",
    ] {
        if let Ok(v) = std::env::var(key) {
            options.insert(key.to_string(), v);
        }
    }
    if let Some(s3) = &config.s3 {
        let mut set = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                options.insert(k.to_string(), v);
            }
        };
        set("AWS_ENDPOINT_URL", s3.endpoint.clone());
        set("AWS_REGION", s3.region.clone());
        set("AWS_ACCESS_KEY_ID", s3.access_key_id.clone());
        set(
            "AWS_SECRET_ACCESS_KEY",
            s3.secret_access_key
                .as_ref()
                .map(|s| s.expose().to_string()),
        );
        set(
            "AWS_SESSION_TOKEN",
            s3.session_token.as_ref().map(|s| s.expose().to_string()),
        );
        set("AWS_ALLOW_HTTP", s3.allow_http.map(|b| b.to_string()));
        set(
            "AWS_UNSIGNED_PAYLOAD",
            s3.unsigned_payload.map(|b| b.to_string()),
        );
    }
    options
        .entry("AWS_REGION".into())
        .or_insert_with(|| "us-east-1".into());
    // The endpoint the store will use: ours, else object_store's own variable, else AWS.
    let endpoint = options
        .get("AWS_ENDPOINT_URL")
        .cloned()
        .or_else(|| std::env::var("AWS_ENDPOINT").ok());
    let https = endpoint.is_none_or(|e| e.to_ascii_lowercase().starts_with("https://"));
    options
        .entry("AWS_UNSIGNED_PAYLOAD".into())
        .or_insert_with(|| https.to_string());
    if let Some(endpoint) = options.get("AWS_ENDPOINT_URL").cloned() {
        // object_store's own key for a custom endpoint.
        options.insert("AWS_ENDPOINT".into(), endpoint);
    }
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots() {
        assert_eq!(parse_root("s3://b/p").unwrap().as_str(), "s3://b/p/");
        assert_eq!(
            parse_root("file:///tmp/x").unwrap().as_str(),
            "file:///tmp/x/"
        );
        assert!(parse_root("/tmp/x")
            .unwrap()
            .as_str()
            .starts_with("file:///tmp/x"));
        assert!(parse_root("gs://b").unwrap_err().to_string().contains("gs"));
        assert!(parse_root("s3:///p").is_err());
    }

    #[tokio::test]
    async fn an_escaped_prefix_is_the_key_prefix_delta_rs_uses() {
        let config = LakeConfig {
            url: "s3://b/my%20lake/logs".into(),
            s3: Some(crate::config::S3Config {
                endpoint: Some("http://127.0.0.1:9".into()),
                allow_http: Some(true),
                ..Default::default()
            }),
            single_writer: false,
        };
        let lake = Lake::connect(&config).await.unwrap();
        assert_eq!(lake.path("app-logs").as_ref(), "my lake/logs/app-logs");
        let url = lake.table_url("app-logs");
        let theirs = Path::from_url_path(url.path()).unwrap();
        assert_eq!(theirs.as_ref(), lake.path("app-logs").as_ref());
    }

    #[test]
    fn payloads_go_unsigned_over_https_only_unless_configured() {
        let unsigned = |endpoint: &str, configured: Option<bool>| {
            let config = LakeConfig {
                url: "s3://b/p".into(),
                s3: Some(crate::config::S3Config {
                    endpoint: Some(endpoint.into()),
                    unsigned_payload: configured,
                    ..Default::default()
                }),
                single_writer: false,
            };
            s3_options(&config)["AWS_UNSIGNED_PAYLOAD"].clone()
        };
        assert_eq!(unsigned("https://s3.eu-west-1.amazonaws.com", None), "true");
        assert_eq!(unsigned("HTTPS://minio.internal:9000", None), "true");
        assert_eq!(unsigned("http://127.0.0.1:9000", None), "false");
        assert_eq!(
            unsigned("https://minio.internal:9000", Some(false)),
            "false"
        );
        assert_eq!(unsigned("http://127.0.0.1:9000", Some(true)), "true");
    }

    #[tokio::test]
    async fn local_lake_creates_lists_and_names_tables() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::connect(&LakeConfig::local(dir.path())).await.unwrap();
        lake.ensure_safe_for_writes().await.unwrap();
        let schema = arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("x", arrow::datatypes::DataType::Int64, true),
            arrow::datatypes::Field::new("host", arrow::datatypes::DataType::Utf8, false),
        ]);
        let t = lake
            .open_or_create("app-logs", &schema, &["host"])
            .await
            .unwrap();
        assert_eq!(t.version(), 0);
        let again = lake
            .open_or_create("app-logs", &schema, &["host"])
            .await
            .unwrap();
        assert_eq!(again.version(), 0);
        assert_eq!(again.id(), t.id());
        let tables = lake.list_tables().await.unwrap();
        assert_eq!(tables.len(), 1);
        assert_eq!(tables[0].sql_name, "app_logs");
    }
}
