//! The security side of `[kafka]`: TLS and SASL keys, Amazon MSK IAM, their validation and
//! the librdkafka settings they stand for.

use serde::{Deserialize, Serialize};

use super::KafkaConfig;
use crate::error::IngestError;

/// librdkafka settings whose values are secrets.
pub(crate) fn is_secret_option(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password") || key.contains("secret") || key.ends_with("jaas.config")
}

/// `kafka.auth`
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum KafkaAuth {
    /// TLS and SASL as the `security_protocol` / `sasl_*` / `ssl_*` keys say.
    #[default]
    None,
    /// Amazon MSK IAM access control.
    MskIam,
}

/// `kafka.security_protocol`
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    #[serde(alias = "PLAINTEXT")]
    Plaintext,
    #[serde(alias = "SSL")]
    Ssl,
    #[serde(alias = "SASL_PLAINTEXT")]
    SaslPlaintext,
    #[serde(alias = "SASL_SSL")]
    SaslSsl,
}

impl SecurityProtocol {
    fn librdkafka(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    fn sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// `kafka.sasl_mechanism`
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN", alias = "plain")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256", alias = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512", alias = "scram-sha-512")]
    ScramSha512,
    #[serde(rename = "OAUTHBEARER", alias = "oauthbearer")]
    OAuthBearer,
}

impl SaslMechanism {
    fn librdkafka(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
            Self::OAuthBearer => "OAUTHBEARER",
        }
    }
}

/// One librdkafka setting derived from a first-class key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientSetting {
    /// The librdkafka property.
    pub key: &'static str,
    pub value: String,
    /// The `[kafka]` key it came from, for errors.
    pub from: &'static str,
    pub secret: bool,
}

impl KafkaConfig {
    /// The security protocol in force: as configured, or what `auth` implies.
    pub fn effective_protocol(&self) -> SecurityProtocol {
        match (self.security_protocol, self.auth) {
            (Some(p), _) => p,
            (None, KafkaAuth::MskIam) => SecurityProtocol::SaslSsl,
            (None, KafkaAuth::None) => SecurityProtocol::Plaintext,
        }
    }

    /// Checks the connection and security keys (not the subscription): what any client needs.
    pub fn validate_security(&self) -> Result<(), IngestError> {
        let bad = |key: &str, message: String| IngestError::Config {
            key: key.to_string(),
            message,
        };
        let protocol = self.effective_protocol();
        if self.auth == KafkaAuth::MskIam {
            if protocol != SecurityProtocol::SaslSsl {
                return Err(bad(
                    "kafka.security_protocol",
                    "must be sasl_ssl (or unset) with auth = \"msk_iam\"".into(),
                ));
            }
            if !matches!(self.sasl_mechanism, None | Some(SaslMechanism::OAuthBearer)) {
                return Err(bad(
                    "kafka.sasl_mechanism",
                    "must be OAUTHBEARER (or unset) with auth = \"msk_iam\"".into(),
                ));
            }
            if self.sasl_username.is_some() || self.sasl_password.is_some() {
                return Err(bad(
                    "kafka.sasl_username",
                    "auth = \"msk_iam\" signs with AWS credentials; remove sasl_username and sasl_password".into(),
                ));
            }
        } else if self.aws_region.is_some() {
            return Err(bad(
                "kafka.aws_region",
                "is only used with auth = \"msk_iam\"".into(),
            ));
        }
        match (protocol.sasl(), self.sasl_mechanism) {
            (true, None) if self.auth == KafkaAuth::None => {
                return Err(bad(
                    "kafka.sasl_mechanism",
                    format!(
                        "is required with security_protocol = \"{}\": PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER",
                        protocol.librdkafka()
                    ),
                ))
            }
            (false, Some(_)) => {
                return Err(bad(
                    "kafka.sasl_mechanism",
                    format!(
                        "needs security_protocol = \"sasl_ssl\" (or \"sasl_plaintext\"), not \"{}\"",
                        protocol.librdkafka()
                    ),
                ))
            }
            _ => {}
        }
        if self.auth == KafkaAuth::None && self.sasl_mechanism == Some(SaslMechanism::OAuthBearer) {
            return Err(bad(
                "kafka.sasl_mechanism",
                "OAUTHBEARER is supported for Amazon MSK through auth = \"msk_iam\"; other token providers are not supported yet".into(),
            ));
        }
        let password_based = matches!(
            self.sasl_mechanism,
            Some(SaslMechanism::Plain | SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512)
        );
        if password_based && (self.sasl_username.is_none() || self.sasl_password.is_none()) {
            return Err(bad(
                "kafka.sasl_username",
                "PLAIN and SCRAM need sasl_username and sasl_password (env LOGLAKE_KAFKA_SASL_PASSWORD)".into(),
            ));
        }
        if !password_based && (self.sasl_username.is_some() || self.sasl_password.is_some()) {
            return Err(bad(
                "kafka.sasl_username",
                "sasl_username and sasl_password are used only with sasl_mechanism PLAIN or SCRAM-SHA-256/512".into(),
            ));
        }
        let tls = matches!(protocol, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl);
        let files = [
            ("kafka.ssl_ca_location", &self.ssl_ca_location),
            (
                "kafka.ssl_certificate_location",
                &self.ssl_certificate_location,
            ),
            ("kafka.ssl_key_location", &self.ssl_key_location),
        ];
        for (key, path) in files {
            let Some(path) = path else { continue };
            if !tls {
                return Err(bad(
                    key,
                    format!(
                        "is set but security_protocol = \"{}\" does not use TLS; use ssl or sasl_ssl",
                        protocol.librdkafka()
                    ),
                ));
            }
            if !path.is_file() {
                return Err(bad(key, format!("{}: no such file", path.display())));
            }
        }
        if self.ssl_certificate_location.is_some() != self.ssl_key_location.is_some() {
            return Err(bad(
                "kafka.ssl_certificate_location",
                "a client certificate needs its key: set both ssl_certificate_location and ssl_key_location".into(),
            ));
        }
        for setting in self.client_settings() {
            if self.options.contains_key(setting.key) {
                return Err(bad(
                    &format!("kafka.options.{}", setting.key),
                    format!("is also set by {}; keep one of them", setting.from),
                ));
            }
        }
        Ok(())
    }

    /// The librdkafka settings the first-class security keys stand for.
    pub(crate) fn client_settings(&self) -> Vec<ClientSetting> {
        let mut out = Vec::new();
        let mut push = |key, value: String, from, secret| {
            out.push(ClientSetting {
                key,
                value,
                from,
                secret,
            })
        };
        let protocol_from = if self.security_protocol.is_some() {
            "kafka.security_protocol"
        } else {
            "kafka.auth"
        };
        if self.security_protocol.is_some() || self.auth != KafkaAuth::None {
            push(
                "security.protocol",
                self.effective_protocol().librdkafka().to_string(),
                protocol_from,
                false,
            );
        }
        match (self.auth, self.sasl_mechanism) {
            (KafkaAuth::MskIam, _) => {
                push("sasl.mechanism", "OAUTHBEARER".into(), "kafka.auth", false)
            }
            (KafkaAuth::None, Some(m)) => push(
                "sasl.mechanism",
                m.librdkafka().into(),
                "kafka.sasl_mechanism",
                false,
            ),
            (KafkaAuth::None, None) => {}
        }
        if let Some(u) = &self.sasl_username {
            push("sasl.username", u.clone(), "kafka.sasl_username", false);
        }
        if let Some(p) = &self.sasl_password {
            push(
                "sasl.password",
                p.expose().to_string(),
                "kafka.sasl_password",
                true,
            );
        }
        let paths = [
            (
                "ssl.ca.location",
                &self.ssl_ca_location,
                "kafka.ssl_ca_location",
            ),
            (
                "ssl.certificate.location",
                &self.ssl_certificate_location,
                "kafka.ssl_certificate_location",
            ),
            (
                "ssl.key.location",
                &self.ssl_key_location,
                "kafka.ssl_key_location",
            ),
        ];
        for (key, path, from) in paths {
            if let Some(path) = path {
                push(key, path.display().to_string(), from, false);
            }
        }
        if let Some(p) = &self.ssl_key_password {
            push(
                "ssl.key.password",
                p.expose().to_string(),
                "kafka.ssl_key_password",
                true,
            );
        }
        out
    }
}
