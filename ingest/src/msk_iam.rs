//! Amazon MSK IAM authentication: the SASL/OAUTHBEARER token librdkafka sends to MSK brokers.
//!
//! With `kafka.auth = "msk_iam"` the brokers authenticate a client by an AWS SigV4 signature
//! instead of a password. The bearer token is what AWS's own signers
//! (`aws-msk-iam-sasl-signer` for Python, Go, JS and Java) produce — the same signature for
//! the same inputs; only the `User-Agent` and the order of the query parameters differ:
//!
//! 1. the URL `https://kafka.<region>.amazonaws.com/?Action=kafka-cluster%3AConnect`,
//! 2. presigned with SigV4 in the query string: service `kafka-cluster`, `X-Amz-Expires=900`,
//!    only `host` signed, the payload hash of an empty body, the session token (if any) inside
//!    the signature,
//! 3. then `User-Agent=loglake/<version>` appended, outside the signature as those signers do,
//! 4. the whole URL base64url-encoded without padding.
//!
//! Anyone holding the token can connect as us for 15 minutes, and it carries the session
//! token: neither it nor the credentials appear in `Debug` output, logs or error messages.
//!
//! # Where librdkafka asks for the token, and why credentials are cached
//!
//! rdkafka calls `ClientContext::generate_oauth_token` synchronously, on whichever thread
//! polls the client's queue. For our `StreamConsumer` that is the ingest main loop on a Tokio
//! worker thread (the refresh event arrives on the consumer queue, served by `stream.next()`),
//! not a librdkafka thread: `Handle::block_on` there would panic, and this crate's rule is that
//! callbacks do no IO. So the work is split:
//!
//! - loading credentials (env, profile, web identity/IRSA, ECS, IMDS — possibly network) is
//!   async, cached, and kept ahead of expiry by [`MskIamSigner::keep_fresh`] on a task of its
//!   own;
//! - signing is a few HMACs, pure and clock-injected: [`sign_token`].
//!
//! [`MskIamSigner::token_blocking`] signs with the cached credentials while they are fresh,
//! which is the steady state: no IO, microseconds. Only a cold or stale cache (the refresher
//! failing, or not started) makes it load credentials in the callback, bounded by
//! [`CREDENTIALS_TIMEOUT`], and only where blocking is possible (see its doc).
//!
//! librdkafka connects to no broker until it holds a token, and asks for the first one on the
//! client's first poll: a blocking call before that (`fetch_metadata`) waits in vain.
//!
//! ```ignore
//! impl ClientContext for LoglakeContext {
//!     const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;
//!
//!     fn generate_oauth_token(&self, _: Option<&str>) -> Result<OAuthToken, Box<dyn Error>> {
//!         let signer = self.msk_iam.as_ref().ok_or("OAUTHBEARER without kafka.auth = \"msk_iam\"")?;
//!         Ok(signer.token_blocking(&self.runtime)?.into())
//!     }
//! }
//!
//! // Before the consumer exists, and for the worker's life:
//! let signer = Arc::new(MskIamSigner::from_env(kafka.aws_region.clone()).await?);
//! signer.refresh_credentials().await?;
//! tasks.spawn({
//!     let (signer, stop) = (signer.clone(), stop.clone());
//!     async move { signer.keep_fresh(stop).await }
//! });
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials as _, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, SignableBody, SignableRequest, SignatureLocation, SigningParams, SigningSettings,
};
use aws_sigv4::sign::v4;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio_util::sync::CancellationToken;
use url::Url;

/// How long a token is valid (`X-Amz-Expires`): the 900 s every official signer uses.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(900);

/// The longest a credential load may take. The SDK's providers time out their own requests;
/// this bounds the whole chain, because in the fallback path of
/// [`MskIamSigner::token_blocking`] the consumer's poll waits for it.
pub const CREDENTIALS_TIMEOUT: Duration = Duration::from_secs(10);

/// The SigV4 signing name of MSK's IAM access control.
const SIGNING_NAME: &str = "kafka-cluster";
/// The IAM action a connection needs.
const ACTION: &str = "kafka-cluster:Connect";
/// Sent outside the signature, so the broker's logs say which client connected.
const USER_AGENT: &str = concat!("loglake/", env!("CARGO_PKG_VERSION"));

/// Cached credentials must outlive a token signed now by this much more: librdkafka reuses a
/// token for every new broker connection until it refreshes it, so credentials that expire
/// first would make later connections fail.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);
/// Credentials that do not say when they expire (access keys from the environment or a
/// profile) are asked for again after this long, so a rotated key is picked up.
const STATIC_REUSE: Duration = Duration::from_secs(600);
/// [`MskIamSigner::refresh_credentials`] reloads credentials that would go stale within this
/// long, so the callback never finds them stale while the refresher runs.
const REFRESH_AHEAD: Duration = Duration::from_secs(120);
/// How often [`MskIamSigner::keep_fresh`] checks; well under [`REFRESH_AHEAD`].
const REFRESH_CHECK_EVERY: Duration = Duration::from_secs(30);

/// Why no token could be made.
#[derive(Debug, thiserror::Error)]
pub enum MskIamError {
    #[error("{region:?} is not an AWS region name (lowercase letters, digits and '-', like \"us-east-1\")")]
    InvalidRegion { region: String },
    #[error("no AWS region for MSK IAM: set kafka.aws_region, or AWS_REGION in the environment")]
    NoRegion,
    #[error("the AWS configuration has no credentials provider")]
    NoCredentialsProvider,
    #[error("could not load AWS credentials for MSK IAM")]
    Credentials {
        #[source]
        source: CredentialsError,
    },
    #[error("loading AWS credentials for MSK IAM took longer than {after:?}")]
    CredentialsTimeout { after: Duration },
    #[error(
        "no fresh AWS credentials are cached, and loading them here would block a current-thread \
         Tokio runtime; load them first with MskIamSigner::refresh_credentials"
    )]
    WouldBlock,
    #[error("the system clock is before 1970")]
    Clock,
    /// A bug rather than a condition: the request signed is always the same well-formed one.
    #[error("could not sign the MSK IAM token")]
    Signing {
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
}

/// A signed token and when it expires.
#[derive(Clone, PartialEq, Eq)]
pub struct MskToken {
    token: String,
    lifetime_ms: i64,
}

impl MskToken {
    /// The bearer token: a secret until it expires.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// When the token expires, in milliseconds since the Unix epoch, as librdkafka wants it:
    /// it refreshes the token 80% of the way there.
    pub fn lifetime_ms(&self) -> i64 {
        self.lifetime_ms
    }
}

impl fmt::Debug for MskToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MskToken")
            .field(
                "token",
                &format_args!("** redacted ({} bytes) **", self.token.len()),
            )
            .field("lifetime_ms", &self.lifetime_ms)
            .finish()
    }
}

impl From<MskToken> for rdkafka::client::OAuthToken {
    fn from(token: MskToken) -> Self {
        rdkafka::client::OAuthToken {
            token: token.token,
            // MSK takes the identity from the signature; librdkafka only prints this name in
            // its logs. Empty, as in the official signers' examples.
            principal_name: String::new(),
            lifetime_ms: token.lifetime_ms,
        }
    }
}

/// Signs the MSK IAM token for `region` with `credentials` at `now`: the pure core, no IO.
///
/// The token expires [`TOKEN_LIFETIME`] after `now` (whole seconds, as `X-Amz-Date` has
/// them), or when the credentials do if that is sooner, so that librdkafka refreshes it
/// before the credentials behind it lapse.
pub fn sign_token(
    region: &str,
    credentials: &Credentials,
    now: SystemTime,
) -> Result<MskToken, MskIamError> {
    check_region(region)?;
    // The region is a host label by now, so the URL parses. Form encoding writes the action
    // as `kafka-cluster%3AConnect`, as the official signers send it.
    let mut url = Url::parse(&format!("https://kafka.{region}.amazonaws.com/")).map_err(|_| {
        MskIamError::InvalidRegion {
            region: region.to_string(),
        }
    })?;
    url.query_pairs_mut().append_pair("Action", ACTION);

    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(TOKEN_LIFETIME);
    // The rest of the defaults are what MSK expects: the session token goes into the
    // canonical query (botocore's and aws-sdk-go-v2's presigners do the same) and only the
    // `host` header exists to be signed.
    let identity = credentials.clone().into();
    let params: SigningParams<'_> = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SIGNING_NAME)
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| MskIamError::Signing { source: e.into() })?
        .into();
    // An empty body, as the official signers declare (sha256 of ""), not UNSIGNED-PAYLOAD.
    let request = SignableRequest::new(
        "GET",
        url.as_str(),
        std::iter::empty(),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| MskIamError::Signing { source: e.into() })?;
    let (instructions, _signature) = sign(request, &params)
        .map_err(|e| MskIamError::Signing { source: e.into() })?
        .into_parts();

    {
        let mut query = url.query_pairs_mut();
        for (name, value) in instructions.params() {
            query.append_pair(name, value);
        }
        // Last and unsigned: the broker ignores it for the signature, as with every signer.
        query.append_pair("User-Agent", USER_AGENT);
    }

    let signed_at = now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| MskIamError::Clock)?
        .as_secs();
    let mut expires_s = signed_at.saturating_add(TOKEN_LIFETIME.as_secs());
    if let Some(expiry) = credentials.expiry() {
        // Credentials that already expired give a lifetime in the past, which librdkafka
        // refuses; it then asks again in 10 s, by when the cache has been refreshed.
        let credentials_s = expiry.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        expires_s = expires_s.min(credentials_s);
    }
    let lifetime_ms = i64::try_from(expires_s)
        .ok()
        .and_then(|s| s.checked_mul(1000))
        .ok_or(MskIamError::Clock)?;

    Ok(MskToken {
        token: URL_SAFE_NO_PAD.encode(url.as_str()),
        lifetime_ms,
    })
}

/// Region names are DNS labels (`us-east-1`, `us-gov-west-1`); anything else would put
/// another host into the signed URL.
fn check_region(region: &str) -> Result<(), MskIamError> {
    let label = !region.is_empty()
        && region.len() <= 63
        && !region.starts_with('-')
        && !region.ends_with('-')
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if label {
        Ok(())
    } else {
        Err(MskIamError::InvalidRegion {
            region: region.to_string(),
        })
    }
}

/// Makes MSK IAM tokens for one region from one credentials provider, caching the
/// credentials so that a token can be signed without IO.
pub struct MskIamSigner {
    region: String,
    provider: SharedCredentialsProvider,
    /// Never held across an `.await` nor while signing: a std mutex is enough, and the
    /// synchronous callback can take it.
    cache: Mutex<Option<CachedCredentials>>,
}

struct CachedCredentials {
    credentials: Credentials,
    fetched_at: SystemTime,
}

impl CachedCredentials {
    /// Whether a token signed at `now` with these credentials may be handed out.
    fn reusable_at(&self, now: SystemTime) -> bool {
        match self.credentials.expiry() {
            Some(expiry) => now
                .checked_add(TOKEN_LIFETIME + EXPIRY_MARGIN)
                .is_some_and(|needed| needed <= expiry),
            // A clock that stepped back makes the age an error: load again.
            None => now
                .duration_since(self.fetched_at)
                .is_ok_and(|age| age < STATIC_REUSE),
        }
    }
}

impl fmt::Debug for MskIamSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the cache: even the redacted `Credentials` show the access key id.
        f.debug_struct("MskIamSigner")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl MskIamSigner {
    /// A signer for the cluster's `region` that takes credentials from `provider`.
    pub fn new(
        region: impl Into<String>,
        provider: SharedCredentialsProvider,
    ) -> Result<Self, MskIamError> {
        let region = region.into();
        check_region(&region)?;
        Ok(Self {
            region,
            provider,
            cache: Mutex::new(None),
        })
    }

    /// A signer with `config`'s credentials provider, for `region` or else `config`'s region.
    pub fn from_sdk_config(
        region: Option<String>,
        config: &SdkConfig,
    ) -> Result<Self, MskIamError> {
        let region = region
            .or_else(|| config.region().map(|r| r.as_ref().to_string()))
            .ok_or(MskIamError::NoRegion)?;
        let provider = config
            .credentials_provider()
            .ok_or(MskIamError::NoCredentialsProvider)?;
        Self::new(region, provider)
    }

    /// A signer with the standard AWS credential chain (environment, profile, web identity /
    /// IRSA, ECS, IMDS) for `region`, or else the region that chain finds (`AWS_REGION`,
    /// `AWS_DEFAULT_REGION`, the profile, IMDS). Loads no credentials yet.
    pub async fn from_env(region: Option<String>) -> Result<Self, MskIamError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &region {
            // Refuse a bad name before the chain uses it for STS endpoints.
            check_region(region)?;
            loader = loader.region(Region::new(region.clone()));
        }
        Self::from_sdk_config(region, &loader.load().await)
    }

    /// The region tokens are signed for.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// A token signed now, loading credentials first unless fresh ones are cached.
    pub async fn token(&self) -> Result<MskToken, MskIamError> {
        let credentials = match self.cached_at(SystemTime::now()) {
            Some(credentials) => credentials,
            None => self.load_credentials().await?,
        };
        sign_token(&self.region, &credentials, SystemTime::now())
    }

    /// A token for librdkafka's synchronous `generate_oauth_token`, on whatever thread polls
    /// the client.
    ///
    /// With fresh credentials cached it only signs: no IO, no runtime needed. Otherwise it
    /// loads them on `runtime` (within [`CREDENTIALS_TIMEOUT`]) and waits:
    /// - on a thread outside any runtime (librdkafka's own, a `std::thread`): `block_on`;
    /// - on a multi-thread runtime's thread (a `StreamConsumer` polled from a task, a
    ///   blocking-pool thread): inside `block_in_place`, which hands this worker's other
    ///   tasks to another thread, as a plain `block_on` there would panic;
    /// - if `runtime` or the runtime we are on is current-thread: [`MskIamError::WouldBlock`],
    ///   since blocking its only thread would stop the IO the load waits for. librdkafka
    ///   asks again 10 s after a failure.
    pub fn token_blocking(&self, runtime: &Handle) -> Result<MskToken, MskIamError> {
        let now = SystemTime::now();
        if let Some(credentials) = self.cached_at(now) {
            return sign_token(&self.region, &credentials, now);
        }
        if runtime.runtime_flavor() != RuntimeFlavor::MultiThread {
            return Err(MskIamError::WouldBlock);
        }
        match Handle::try_current() {
            Err(_) => runtime.block_on(self.token()),
            Ok(current) if current.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| runtime.block_on(self.token()))
            }
            Ok(_) => Err(MskIamError::WouldBlock),
        }
    }

    /// Loads credentials unless the cached ones stay fresh for a while yet. Call it before
    /// creating the Kafka client, so that its first token needs no IO.
    pub async fn refresh_credentials(&self) -> Result<(), MskIamError> {
        let soon = SystemTime::now()
            .checked_add(REFRESH_AHEAD)
            .ok_or(MskIamError::Clock)?;
        if self.cached_at(soon).is_none() {
            self.load_credentials().await?;
        }
        Ok(())
    }

    /// Keeps the cached credentials fresh until `shutdown` is cancelled, so that
    /// [`token_blocking`](Self::token_blocking) always finds them; failures are logged and
    /// retried on the next check, while the cached credentials remain usable.
    pub async fn keep_fresh(&self, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.refresh_credentials().await {
                tracing::warn!(
                    region = %self.region,
                    error = %error_chain(&e),
                    "could not refresh AWS credentials for MSK IAM"
                );
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(REFRESH_CHECK_EVERY) => {}
            }
        }
    }

    /// The cached credentials, if a token signed at `at` may use them.
    fn cached_at(&self, at: SystemTime) -> Option<Credentials> {
        // A panic elsewhere cannot leave the `Option` half-written: poisoning is harmless.
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache
            .as_ref()
            .filter(|cached| cached.reusable_at(at))
            .map(|cached| cached.credentials.clone())
    }

    /// Asks the provider (no lock held meanwhile) and caches what it gives. Two callers
    /// racing each load once; the later answer stays, and both are valid.
    async fn load_credentials(&self) -> Result<Credentials, MskIamError> {
        let credentials =
            tokio::time::timeout(CREDENTIALS_TIMEOUT, self.provider.provide_credentials())
                .await
                .map_err(|_| MskIamError::CredentialsTimeout {
                    after: CREDENTIALS_TIMEOUT,
                })?
                .map_err(|source| MskIamError::Credentials { source })?;
        let fetched_at = SystemTime::now();
        tracing::debug!(
            region = %self.region,
            expires_in_s = credentials
                .expiry()
                .and_then(|e| e.duration_since(fetched_at).ok())
                .map(|d| d.as_secs()),
            "loaded AWS credentials for MSK IAM"
        );
        *self.cache.lock().unwrap_or_else(PoisonError::into_inner) = Some(CachedCredentials {
            credentials: credentials.clone(),
            fetched_at,
        });
        Ok(credentials)
    }
}

/// `error: cause: cause`, for a log line: the SDK's reason (no IMDS, an STS refusal) is in
/// the sources, and `Display` alone shows only the top.
pub(crate) fn error_chain(error: &dyn StdError) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use aws_credential_types::provider::{future, ProvideCredentials};

    use super::*;

    // The AWS documentation's example key pair; the session token exercises '/', '+', '='.
    const AKID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const SESSION_TOKEN: &str = "IQoJb3JpZ2luX2VjEXAMPLE/session+token==";

    /// 2024-03-15T12:34:56Z
    fn signing_time() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_710_506_096)
    }

    fn credentials(session_token: Option<&str>, expiry: Option<SystemTime>) -> Credentials {
        Credentials::new(
            AKID,
            SECRET,
            session_token.map(String::from),
            expiry,
            "test",
        )
    }

    /// The token's URL, and its query in order.
    fn decode(token: &MskToken) -> (Url, Vec<(String, String)>) {
        let bytes = URL_SAFE_NO_PAD.decode(token.token()).expect("base64url");
        let url = Url::parse(std::str::from_utf8(&bytes).expect("utf-8")).expect("a URL");
        let pairs = url.query_pairs().into_owned().collect();
        (url, pairs)
    }

    fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
        let mut found = pairs.iter().filter(|(n, _)| n == name);
        let value = found.next().map(|(_, v)| v.as_str());
        assert!(found.next().is_none(), "{name} appears twice");
        value
    }

    #[test]
    fn token_is_a_presigned_connect_url() {
        let creds = credentials(Some(SESSION_TOKEN), None);
        let token = sign_token("eu-west-1", &creds, signing_time()).unwrap();
        assert!(
            token
                .token()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "base64url without padding"
        );

        let (url, pairs) = decode(&token);
        assert_eq!(url.scheme(), "https");
        assert_eq!(url.host_str(), Some("kafka.eu-west-1.amazonaws.com"));
        assert_eq!(url.port(), None);
        assert_eq!(url.path(), "/");
        assert!(url
            .as_str()
            .starts_with("https://kafka.eu-west-1.amazonaws.com/?Action=kafka-cluster%3AConnect&"));

        assert_eq!(param(&pairs, "Action"), Some("kafka-cluster:Connect"));
        assert_eq!(param(&pairs, "X-Amz-Algorithm"), Some("AWS4-HMAC-SHA256"));
        assert_eq!(
            param(&pairs, "X-Amz-Credential"),
            Some("AKIDEXAMPLE/20240315/eu-west-1/kafka-cluster/aws4_request")
        );
        assert_eq!(param(&pairs, "X-Amz-Date"), Some("20240315T123456Z"));
        assert_eq!(param(&pairs, "X-Amz-Expires"), Some("900"));
        assert_eq!(param(&pairs, "X-Amz-SignedHeaders"), Some("host"));
        assert_eq!(param(&pairs, "X-Amz-Security-Token"), Some(SESSION_TOKEN));
        let signature = param(&pairs, "X-Amz-Signature").expect("a signature");
        assert_eq!(signature.len(), 64);
        assert!(signature
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        assert_eq!(pairs.first().map(|(n, _)| n.as_str()), Some("Action"));
        assert_eq!(
            pairs.last(),
            Some(&("User-Agent".to_string(), USER_AGENT.to_string()))
        );
        assert_eq!(pairs.len(), 9);
        assert_eq!(token.lifetime_ms(), 1_710_506_996_000);
    }

    #[test]
    fn no_session_token_no_security_token_param() {
        let token = sign_token("us-east-1", &credentials(None, None), signing_time()).unwrap();
        let (_, pairs) = decode(&token);
        assert_eq!(param(&pairs, "X-Amz-Security-Token"), None);
        assert_eq!(pairs.len(), 8);
    }

    /// Pinned against two independent computations for 2024-03-15T12:34:56Z, us-east-1:
    /// SigV4 written out with Python's hashlib/hmac, and botocore's `SigV4QueryAuth` (what
    /// aws-msk-iam-sasl-signer-python signs with) with its clock frozen. Both gave these.
    #[test]
    fn signature_is_pinned() {
        let cases = [
            (
                None,
                "2741a9359785627a1ac56c5be793fb6977ffe43fd19fb950150726b34d74601b",
            ),
            (
                Some(SESSION_TOKEN),
                "3104ab98608ee3ceacee8e2d32e96ba215896f2ef0bab16a87adce4bbe98a99b",
            ),
        ];
        for (session_token, expected) in cases {
            let creds = credentials(session_token, None);
            let token = sign_token("us-east-1", &creds, signing_time()).unwrap();
            let (_, pairs) = decode(&token);
            assert_eq!(param(&pairs, "X-Amz-Signature"), Some(expected));
            assert_eq!(token.lifetime_ms(), 1_710_506_996_000);

            // X-Amz-Date has whole seconds: a later instant of the same second signs the same.
            let later = signing_time() + Duration::from_millis(999);
            assert_eq!(sign_token("us-east-1", &creds, later).unwrap(), token);
        }
    }

    #[test]
    fn lifetime_stops_at_the_credentials_expiry() {
        let expiry = signing_time() + Duration::from_secs(300);
        let token = sign_token(
            "us-east-1",
            &credentials(None, Some(expiry)),
            signing_time(),
        )
        .unwrap();
        assert_eq!(token.lifetime_ms(), 1_710_506_396_000);
        let later = signing_time() + Duration::from_secs(3600);
        let token =
            sign_token("us-east-1", &credentials(None, Some(later)), signing_time()).unwrap();
        assert_eq!(token.lifetime_ms(), 1_710_506_996_000);
    }

    #[test]
    fn region_must_be_a_host_label() {
        for good in ["us-east-1", "eu-central-2", "us-gov-west-1", "cn-north-1"] {
            assert!(check_region(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "US-EAST-1",
            "us east 1",
            "us-east-1.evil.example",
            "evil.example/x",
            "-us-east-1",
            "us-east-1-",
        ] {
            assert!(
                matches!(
                    sign_token(bad, &credentials(None, None), signing_time()),
                    Err(MskIamError::InvalidRegion { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let creds = credentials(Some(SESSION_TOKEN), None);
        let token = sign_token("us-east-1", &creds, signing_time()).unwrap();
        let (_, pairs) = decode(&token);
        let signature = param(&pairs, "X-Amz-Signature").unwrap().to_string();

        let signer = MskIamSigner::new("us-east-1", SharedCredentialsProvider::new(creds)).unwrap();
        let runtime = runtime();
        signer.token_blocking(runtime.handle()).unwrap();
        for shown in [format!("{token:?}"), format!("{signer:?}")] {
            for secret in [
                SECRET,
                SESSION_TOKEN,
                token.token(),
                signature.as_str(),
                AKID,
            ] {
                assert!(!shown.contains(secret), "{shown}");
            }
        }
    }

    #[test]
    fn cached_credentials_are_reused_while_they_outlive_a_token() {
        let now = signing_time();
        let cached = |expiry| CachedCredentials {
            credentials: credentials(None, expiry),
            fetched_at: now,
        };
        let enough = TOKEN_LIFETIME + EXPIRY_MARGIN;
        assert!(cached(Some(now + enough)).reusable_at(now));
        assert!(!cached(Some(now + enough - Duration::from_secs(1))).reusable_at(now));
        assert!(cached(None).reusable_at(now + STATIC_REUSE - Duration::from_secs(1)));
        assert!(!cached(None).reusable_at(now + STATIC_REUSE));
        assert!(!cached(None).reusable_at(now - Duration::from_secs(1)));
    }

    /// Counts how often it is asked.
    #[derive(Debug)]
    struct Counting {
        credentials: Credentials,
        calls: Arc<AtomicUsize>,
    }

    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            self.calls.fetch_add(1, Ordering::SeqCst);
            future::ProvideCredentials::ready(Ok(self.credentials.clone()))
        }
    }

    fn counting_signer(expiry: Option<SystemTime>) -> (MskIamSigner, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let provider = Counting {
            credentials: credentials(Some(SESSION_TOKEN), expiry),
            calls: calls.clone(),
        };
        let signer =
            MskIamSigner::new("us-east-1", SharedCredentialsProvider::new(provider)).unwrap();
        (signer, calls)
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn token_loads_credentials_only_when_the_cache_is_stale() {
        let in_an_hour = SystemTime::now() + Duration::from_secs(3600);
        let (signer, calls) = counting_signer(Some(in_an_hour));
        signer.token().await.unwrap();
        signer.token().await.unwrap();
        signer.refresh_credentials().await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // Expiring before a token would: asked every time.
        let in_ten_minutes = SystemTime::now() + Duration::from_secs(600);
        let (signer, calls) = counting_signer(Some(in_ten_minutes));
        signer.token().await.unwrap();
        signer.token().await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn provider_failure_is_a_credentials_error() {
        let provider = aws_credential_types::credential_fn::provide_credentials_fn(|| async {
            Err(CredentialsError::not_loaded("no credentials in this test"))
        });
        let signer =
            MskIamSigner::new("us-east-1", SharedCredentialsProvider::new(provider)).unwrap();
        let e = signer.token().await.unwrap_err();
        assert!(matches!(e, MskIamError::Credentials { .. }), "{e:?}");
    }

    #[test]
    fn token_blocking_from_a_thread_outside_the_runtime() {
        let runtime = runtime();
        let (signer, calls) = counting_signer(None);
        let token = std::thread::scope(|s| {
            s.spawn(|| signer.token_blocking(runtime.handle()))
                .join()
                .unwrap()
        })
        .unwrap();
        assert_eq!(
            param(&decode(&token).1, "X-Amz-Security-Token"),
            Some(SESSION_TOKEN)
        );
        // Now cached: no runtime needed at all.
        signer.token_blocking(runtime.handle()).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    /// Where our StreamConsumer's callback runs: inside a task on a worker thread.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn token_blocking_from_a_runtime_worker_with_a_cold_cache() {
        let (signer, calls) = counting_signer(None);
        let signer = Arc::new(signer);
        let handle = Handle::current();
        let task = tokio::spawn({
            let signer = signer.clone();
            async move { signer.token_blocking(&handle) }
        });
        task.await.unwrap().unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn token_blocking_on_a_current_thread_runtime_needs_a_warm_cache() {
        let (signer, calls) = counting_signer(None);
        assert!(matches!(
            signer.token_blocking(&Handle::current()),
            Err(MskIamError::WouldBlock)
        ));
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        signer.refresh_credentials().await.unwrap();
        signer.token_blocking(&Handle::current()).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn keep_fresh_loads_then_stops_when_cancelled() {
        let (signer, calls) = counting_signer(None);
        let stop = CancellationToken::new();
        let mut refresher = std::pin::pin!(signer.keep_fresh(stop.clone()));
        tokio::select! {
            _ = &mut refresher => panic!("stopped before being cancelled"),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        stop.cancel();
        refresher.await;
    }
}
