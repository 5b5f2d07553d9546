//! The Kafka side: client settings (security included), consumer creation, and what
//! librdkafka's callbacks report — rebalances signalled to the main loop (never acted on
//! here), fetch positions for stall detection, the last error it logged.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::OAuthToken;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, Statistics, TopicPartitionList};
use tokio::sync::mpsc::UnboundedSender;

use crate::config::{KafkaAuth, KafkaConfig};
use crate::error::IngestError;
use crate::metrics::Metrics;
use crate::msk_iam::MskIamSigner;
use crate::stall::FetchSample;

/// What a rebalance did, in the order librdkafka did it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebalanceEvent {
    Assigned(Vec<(String, i32)>),
    Revoked(Vec<(String, i32)>),
}

/// Where SASL/OAUTHBEARER tokens come from: the MSK IAM signer when `kafka.auth = "msk_iam"`.
#[derive(Debug, Clone, Default)]
pub struct TokenSource {
    signer: Option<(Arc<MskIamSigner>, tokio::runtime::Handle)>,
}

impl TokenSource {
    /// For `kafka.auth = "msk_iam"`: a signer on the standard AWS credential chain, with
    /// credentials loaded now (so the first token needs no IO) and kept fresh on `tasks`
    /// until `stop`.
    pub async fn for_config(
        config: &KafkaConfig,
        tasks: &tokio_util::task::TaskTracker,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<Self, IngestError> {
        if config.auth != KafkaAuth::MskIam {
            return Ok(Self::default());
        }
        let auth_err = |e: crate::msk_iam::MskIamError| IngestError::Auth {
            message: crate::msk_iam::error_chain(&e),
        };
        let signer = MskIamSigner::from_env(config.aws_region.clone())
            .await
            .map_err(auth_err)?;
        signer.refresh_credentials().await.map_err(auth_err)?;
        tracing::info!(region = signer.region(), "MSK IAM authentication");
        let signer = Arc::new(signer);
        tasks.spawn({
            let signer = signer.clone();
            async move { signer.keep_fresh(stop).await }
        });
        Ok(Self {
            signer: Some((signer, tokio::runtime::Handle::current())),
        })
    }

    /// A fresh SASL/OAUTHBEARER token, for a `ClientContext::generate_oauth_token`.
    pub fn token(&self) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        let (signer, runtime) = self
            .signer
            .as_ref()
            .ok_or("SASL/OAUTHBEARER needs kafka.auth = \"msk_iam\"")?;
        match signer.token_blocking(runtime) {
            Ok(token) => Ok(token.into()),
            Err(e) => {
                let message = crate::msk_iam::error_chain(&e);
                tracing::error!(error = %message, "could not make an MSK IAM token");
                Err(message.into())
            }
        }
    }

    pub fn is_active(&self) -> bool {
        self.signer.is_some()
    }
}

/// The context of the worker's short-lived clients (the stall probe): tokens only.
#[derive(Debug, Clone, Default)]
pub struct ProbeContext(pub TokenSource);

impl ClientContext for ProbeContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        _config: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        self.0.token()
    }
}

impl ConsumerContext for ProbeContext {}

/// librdkafka context: forwards rebalances to the main loop and statistics to metrics, and
/// keeps the last error librdkafka logged (its error events carry only a code).
#[derive(Debug)]
pub struct LoglakeContext {
    events: UnboundedSender<RebalanceEvent>,
    metrics: Arc<Metrics>,
    last_error: Mutex<Option<String>>,
    tokens: TokenSource,
}

impl LoglakeContext {
    /// The last error or warning librdkafka logged ("SASL authentication error: ...",
    /// "SSL handshake failed: ... certificate verify failed"); a failure retrying will not
    /// cure is kept over the "all brokers are down" that follows it.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().expect("last error").clone()
    }

    fn note_error(&self, message: String) {
        let mut last = self.last_error.lock().expect("last error");
        if is_definitive(&message) || !last.as_deref().is_some_and(is_definitive) {
            *last = Some(message);
        }
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

impl ClientContext for LoglakeContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        _config: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        self.tokens.token()
    }

    fn stats(&self, statistics: Statistics) {
        let now = Instant::now();
        let mut lag = self.metrics.lag.lock().expect("lag map");
        let mut fetch = self.metrics.fetch.lock().expect("fetch tracker");
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if *partition < 0 || !p.desired {
                    continue;
                }
                if p.consumer_lag >= 0 {
                    lag.insert((topic.clone(), *partition), p.consumer_lag);
                }
                // Under read_committed (the default) the last stable offset is the end.
                let end = if p.ls_offset >= 0 {
                    p.ls_offset
                } else {
                    p.hi_offset
                };
                let sample = FetchSample {
                    position: p.next_offset,
                    end,
                    queued: p.fetchq_cnt,
                };
                fetch.observe(topic, *partition, sample, now);
            }
        }
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", facility = fac, "{message}");
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", facility = fac, "{message}");
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", facility = fac, "{message}");
                return;
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", facility = fac, "{message}");
                return;
            }
        }
        self.note_error(message.to_string());
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::error!(target: "librdkafka", error = %error, "{reason}");
        self.note_error(format!("{error}: {reason}"));
    }
}

impl ConsumerContext for LoglakeContext {
    /// rdkafka's own handler, except that assigned partitions start at their end, not at the
    /// group's committed offset: loglake never reads those (`auto.offset.reset = error`
    /// would stop a partition the group never committed), and the main loop seeks each
    /// partition to where the table says before it accepts a record. Eager protocol only
    /// (`partition.assignment.strategy` is loglake's).
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let rebalance = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => Rebalance::Assign(tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => Rebalance::Revoke(tpl),
            other => Rebalance::Error(KafkaError::Rebalance(other.into())),
        };
        self.pre_rebalance(consumer, &rebalance);
        let done = if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS {
            let mut at_end = tpl.clone();
            at_end
                .set_all_offsets(Offset::End)
                .and_then(|()| consumer.assign(&at_end))
        } else {
            consumer.unassign()
        };
        if let Err(e) = done {
            tracing::error!(error = %e, "librdkafka refused the (un)assignment");
        }
        self.post_rebalance(consumer, &rebalance);
    }

    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let revoked = partitions(tpl);
            tracing::info!(partitions = ?revoked, "partitions revoked");
            let mut lag = self.metrics.lag.lock().expect("lag map");
            let mut fetch = self.metrics.fetch.lock().expect("fetch tracker");
            for key in &revoked {
                lag.remove(key);
                fetch.forget(&key.0, key.1);
            }
            let _ = self.events.send(RebalanceEvent::Revoked(revoked));
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let assigned = partitions(tpl);
                tracing::info!(partitions = ?assigned, "partitions assigned");
                let _ = self.events.send(RebalanceEvent::Assigned(assigned));
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }
}

pub type Consumer = StreamConsumer<LoglakeContext>;

/// The client settings every Kafka client of the worker uses (the consumer, the stall
/// probe): loglake's defaults, then the first-class `[kafka]` keys, then `kafka.options`, so
/// the options can tune everything that is not loglake's to decide.
pub fn client_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // Eager protocols only: cooperative rebalancing plus commits causes storms.
        .set("partition.assignment.strategy", "range,roundrobin")
        // Never a fallback position: a partition Kafka no longer holds the next offset of is
        // reported and handled (positions.rs). The configured `auto.offset.reset` only says
        // where a partition the table has never seen starts (`starts_at_end`).
        .set("auto.offset.reset", "error")
        .set("statistics.interval.ms", "5000")
        // librdkafka prefetches up to 64 MiB by default, outside `memory_budget`; 16 MiB
        // keeps a busy partition fed and the worker's footprint close to its budget.
        .set("queued.max.messages.kbytes", "16384")
        .set("client.id", format!("loglake-{}", std::process::id()));
    for setting in config.client_settings() {
        client.set(setting.key, setting.value);
    }
    for (key, value) in &config.options {
        if key != "auto.offset.reset" {
            client.set(key, value);
        }
    }
    client
}

/// The settings that reach and authenticate with the cluster, for a client that is not a
/// consumer (the agent's producer): brokers, the first-class security keys, then
/// `kafka.options` except the consumer-only keys loglake itself sets or refuses.
pub fn connection_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.brokers);
    for setting in config.client_settings() {
        client.set(setting.key, setting.value);
    }
    for (key, value) in &config.options {
        if !is_consumer_only(key) {
            client.set(key, value);
        }
    }
    client
}

/// librdkafka properties that only a consumer reads (a producer given one logs a warning).
fn is_consumer_only(key: &str) -> bool {
    key.starts_with("group.")
        || key.starts_with("fetch.")
        || key.starts_with("enable.auto.")
        || key.starts_with("auto.")
        || key.starts_with("queued.")
        || matches!(
            key,
            "session.timeout.ms"
                | "heartbeat.interval.ms"
                | "max.poll.interval.ms"
                | "partition.assignment.strategy"
                | "isolation.level"
                | "check.crcs"
                | "coordinator.query.interval.ms"
                | "consume.callback.max.messages"
                | "enable.partition.eof"
        )
}

/// Builds the consumer, checks that the cluster answers (bad credentials, an untrusted
/// certificate or wrong addresses fail here, with librdkafka's reason), and subscribes.
pub async fn create(
    config: &KafkaConfig,
    events: UnboundedSender<RebalanceEvent>,
    metrics: Arc<Metrics>,
    tokens: TokenSource,
    connect_timeout: Duration,
) -> Result<Consumer, IngestError> {
    let client = client_config(config);
    let with_tokens = tokens.is_active();
    let context = LoglakeContext {
        events,
        metrics,
        last_error: Mutex::new(None),
        tokens,
    };
    let consumer: Consumer =
        client
            .create_with_context(context)
            .map_err(|source| IngestError::Kafka {
                context: "could not create the consumer (check the [kafka] settings)".into(),
                source,
            })?;
    if with_tokens {
        // librdkafka connects to no broker before it holds a token, and asks for the first
        // one on the first poll: poll once (before subscribing, nothing else can arrive).
        let _ = tokio::time::timeout(Duration::ZERO, consumer.recv()).await;
    }
    check_reachable(&consumer, config, connect_timeout).await?;
    let subscription = config.subscription();
    let topics: Vec<&str> = subscription.iter().map(String::as_str).collect();
    rdkafka::consumer::Consumer::subscribe(&consumer, &topics).map_err(|source| {
        IngestError::Kafka {
            context: format!("could not subscribe to {topics:?}"),
            source,
        }
    })?;
    Ok(consumer)
}

/// Whether librdkafka's last complaint is one that retrying will not cure: a certificate
/// that does not verify, credentials the cluster refused.
fn is_definitive(error: &str) -> bool {
    let e = error.to_ascii_lowercase();
    [
        "ssl handshake failed",
        "certificate verify failed",
        "authentication failed",
        "sasl authentication error",
        "invalid credentials",
        "could not make an msk iam token",
    ]
    .iter()
    .any(|needle| e.contains(needle))
}

/// Asks the cluster for metadata until it answers, `timeout` passes, or librdkafka reports a
/// failure that retrying will not cure (then at once, with its reason).
async fn check_reachable(
    consumer: &Consumer,
    config: &KafkaConfig,
    timeout: Duration,
) -> Result<(), IngestError> {
    let started = Instant::now();
    let context = rdkafka::consumer::Consumer::client(consumer).context();
    loop {
        // librdkafka queues its log lines and error events for the poller: poll (before
        // subscribing nothing else can arrive) so that they reach the context.
        if let Ok(Err(e)) = tokio::time::timeout(Duration::from_millis(50), consumer.recv()).await {
            tracing::debug!(error = %e, "while connecting");
        }
        let attempt = Duration::from_secs(1).min(timeout.saturating_sub(started.elapsed()));
        let result = tokio::task::block_in_place(|| {
            rdkafka::consumer::Consumer::fetch_metadata(consumer, None, attempt)
        });
        let source = match result {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let said = context.last_error();
        let definitive = said.as_deref().is_some_and(is_definitive);
        if definitive || started.elapsed() >= timeout {
            let said = said
                .map(|e| format!("; librdkafka: {e}"))
                .unwrap_or_default();
            return Err(IngestError::Kafka {
                context: format!(
                    "could not reach the Kafka cluster at {} (after {:.1}s){said}",
                    config.brokers,
                    started.elapsed().as_secs_f64()
                ),
                source,
            });
        }
    }
}

/// `auto.offset.reset` as configured: where a partition with no txn in the table starts.
pub fn starts_at_end(config: &KafkaConfig) -> bool {
    matches!(
        config.options.get("auto.offset.reset").map(String::as_str),
        Some("latest" | "largest" | "end")
    )
}
