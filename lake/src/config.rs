//! Where the lake is and how to reach it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A secret string: shown as `***` in `Debug` output and logs.
#[derive(Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// `[lake]`: where the archive lives.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LakeConfig {
    /// `s3://bucket/prefix` (AWS S3, MinIO, any S3-compatible store) or `file:///path`
    /// (a local directory, created if missing). A plain path is read as a local directory.
    pub url: String,
    /// `[lake.s3]`: endpoint and credentials for `s3://` URLs. `AWS_*` environment variables
    /// (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, ...) fill what is not set here.
    #[serde(default)]
    pub s3: Option<S3Config>,
    /// Skip the put-if-absent self-check. Only safe when exactly one process ever writes
    /// to this lake: on a store that ignores If-None-Match, concurrent commits overwrite
    /// each other silently.
    #[serde(default)]
    pub single_writer: bool,
}

/// `[lake.s3]`
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint URL, for MinIO and other S3-compatible stores (`http://127.0.0.1:9000`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Region (`us-east-1` when unset and not in the environment).
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
    #[serde(default)]
    pub session_token: Option<Secret>,
    /// Allow plain-HTTP endpoints (local MinIO, tests).
    #[serde(default)]
    pub allow_http: Option<bool>,
    /// Sign requests without hashing their bodies (`UNSIGNED-PAYLOAD`), as the AWS SDKs do
    /// for S3 over HTTPS, where TLS protects the body: hashing every uploaded byte costs
    /// about a tenth of a compaction's CPU. Default: on for HTTPS endpoints (and AWS), off for
    /// plain HTTP, where the signature is the body's only protection.
    #[serde(default)]
    pub unsigned_payload: Option<bool>,
}

impl LakeConfig {
    /// A lake in a local directory.
    pub fn local(path: impl AsRef<std::path::Path>) -> Self {
        Self {
            url: path.as_ref().display().to_string(),
            s3: None,
            single_writer: false,
        }
    }
}
