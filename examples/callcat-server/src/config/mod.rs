//! Server configuration from environment variables and matching command-line flags.
//!
//! Every setting is an environment variable (`CALLCAT_LISTEN`, `DATABASE_URL`, ...)
//! and a lower-case flag (`--listen`, `--database-url`, ...); a flag wins over the
//! variable (the command line is clap's, see `--help`). A missing or invalid
//! setting is a [`ConfigError`] naming its variable.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use callcat_core::PhoneNumber;
use url::Url;

mod args;
mod caller_numbers;

use args::Args;
pub use caller_numbers::{
    CallerNumbersConfig, MAX_NUMBERS_PER_TENANT, MAX_TENANT_LEN, MAX_TENANTS,
};

/// A setting that is missing or invalid, naming it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A required setting is not set.
    #[error("{setting} is required{}", when.map(|w| format!(" when {w}")).unwrap_or_default())]
    Missing {
        /// The environment variable.
        setting: &'static str,
        /// The condition that makes it required, if any.
        when: Option<&'static str>,
    },
    /// A setting has a value that cannot be used.
    #[error("{setting} is invalid: {reason}")]
    Invalid {
        /// The environment variable.
        setting: &'static str,
        /// Why.
        reason: String,
    },
    /// A flag that names no setting.
    #[error("unknown flag {0} (try --help)")]
    UnknownFlag(String),
    /// A flag without its value.
    #[error("flag {0} needs a value")]
    MissingValue(String),
    /// Another command-line mistake (clap's explanation).
    #[error("{0}")]
    CommandLine(String),
    /// `--help` was given; the payload is the usage text.
    #[error("{0}")]
    Help(String),
}

impl ConfigError {
    /// The environment variable this error is about, if any.
    pub fn setting(&self) -> Option<&'static str> {
        match self {
            ConfigError::Missing { setting, .. } | ConfigError::Invalid { setting, .. } => {
                Some(setting)
            }
            _ => None,
        }
    }
}

/// A secret string whose `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The master key ring for encryption at rest: `CALLCAT_MASTER_KEY` is base64 of
/// 32 bytes (key id 1), or a rotation list `2:<base64>,1:<base64>` whose first key
/// encrypts and all decrypt. `Debug` shows key ids only.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKeys(Vec<(u32, [u8; 32])>);

impl MasterKeys {
    /// Parses the setting.
    pub fn parse(s: &str) -> Result<Self, String> {
        let decode = |b64: &str| -> Result<[u8; 32], String> {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| format!("not base64: {e}"))?;
            bytes
                .try_into()
                .map_err(|b: Vec<u8>| format!("decodes to {} bytes; 32 are needed", b.len()))
        };
        let mut keys = Vec::new();
        if !s.contains(':') {
            keys.push((1, decode(s)?));
        } else {
            for part in s.split(',') {
                let (id, b64) = part
                    .split_once(':')
                    .ok_or_else(|| "use <base64> or <id>:<base64>,<id>:<base64>".to_owned())?;
                let id: u32 = id
                    .trim()
                    .parse()
                    .map_err(|_| format!("key id {id:?} is not a number"))?;
                if keys.iter().any(|(k, _)| *k == id) {
                    return Err(format!("key id {id} appears twice"));
                }
                keys.push((id, decode(b64)?));
            }
        }
        Ok(MasterKeys(keys))
    }

    /// The cipher over this ring.
    pub fn cipher(&self) -> callcat_core::Result<callcat_core::FieldCipher> {
        callcat_core::FieldCipher::new(
            self.0
                .iter()
                .map(|(id, k)| callcat_core::MasterKey::new(*id, *k))
                .collect(),
        )
    }

    /// The id of the key that encrypts.
    pub fn current_id(&self) -> Option<u32> {
        self.0.first().map(|(id, _)| *id)
    }
}

impl fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<u32> = self.0.iter().map(|(id, _)| *id).collect();
        write!(f, "MasterKeys(ids {ids:?}, <redacted>)")
    }
}

/// Where calls, transcripts and windows are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreConfig {
    /// In this process's memory (lost on exit).
    Memory,
    /// PostgreSQL.
    Postgres {
        /// The connection URL (it may hold a password).
        database_url: Secret,
        /// The schema for callcat's tables (`None`: the connection's search_path).
        schema: Option<String>,
    },
    /// DynamoDB.
    Dynamo(Box<DynamoConfig>),
}

/// DynamoDB settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamoConfig {
    /// A custom endpoint (DynamoDB Local), or AWS's.
    pub endpoint: Option<Url>,
    /// Calls table.
    pub calls_table: String,
    /// Transcripts table.
    pub transcripts_table: String,
    /// Windows table.
    pub windows_table: String,
    /// Do-not-call table.
    pub do_not_call_table: String,
    /// Create the tables at start-up.
    pub create_tables: bool,
    /// AWS region.
    pub region: String,
    /// AWS access key id.
    pub access_key_id: String,
    /// AWS secret access key.
    pub secret_access_key: Secret,
    /// AWS session token for temporary credentials.
    pub session_token: Option<Secret>,
}

/// Which telephony provider places the calls.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TelephonyConfig {
    /// The built-in simulator (no credentials).
    Simulator,
    /// Retell AI.
    Retell {
        /// API key (also the webhook signing key).
        api_key: Secret,
        /// API base URL override.
        base_url: Option<Url>,
        /// The number calls come from.
        from_number: PhoneNumber,
        /// The agent that talks.
        agent_id: String,
    },
    /// Twilio.
    Twilio {
        /// Account SID.
        account_sid: String,
        /// Auth token (also the signature key).
        auth_token: Secret,
        /// The number calls come from.
        from_number: PhoneNumber,
        /// API base URL override.
        base_url: Option<Url>,
    },
}

/// The whole server configuration. `Debug` never prints a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Storage.
    pub store: StoreConfig,
    /// Telephony.
    pub telephony: TelephonyConfig,
    /// The externally visible base URL (no trailing slash).
    pub public_url: Option<Url>,
    /// The JWT secret; `None` is development mode (one is generated).
    pub jwt_secret: Option<Secret>,
    /// The master key for encryption at rest.
    pub master_key: Option<MasterKeys>,
    /// How many calls are dialed at once, how often, and how shutdown drains them.
    pub dispatch: DispatchConfig,
    /// Label the active-calls gauge with tenant names (tenants can be many and
    /// their names are the customer's; off by default).
    pub metrics_tenant_labels: bool,
    /// The bearer token `/metrics` requires (`None`: open).
    pub metrics_token: Option<Secret>,
    /// What a token must say besides its signature.
    pub jwt: JwtConfig,
    /// Limits of the HTTP server.
    pub http: HttpConfig,
    /// The caller numbers each tenant may give (`CALLCAT_CALLER_NUMBERS`);
    /// besides these, only the provider's own from-number (none with the
    /// simulator) may be given as `callerNumber`.
    pub caller_numbers: Option<CallerNumbersConfig>,
    /// One open call per user (`CALLCAT_ONE_OPEN_CALL_PER_USER`).
    pub one_open_call_per_user: bool,
    /// A one-off administration command to run instead of the server.
    pub admin: Option<AdminCommand>,
}

/// A one-off administration command, run instead of the server (see
/// [`crate::admin`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminCommand {
    /// `--rekey`: re-encrypt the stored rows still under an old master key,
    /// then print how many rows remain under each key.
    Rekey,
    /// `--key-report`: only print how many rows are under each master key.
    KeyReport,
}

/// Token checks beyond the signature (`CALLCAT_JWT_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    /// Required `iss` (`CALLCAT_JWT_ISSUER`).
    pub issuer: Option<String>,
    /// Required `aud` (`CALLCAT_JWT_AUDIENCE`).
    pub audience: Option<String>,
    /// Longest lifetime accepted (`CALLCAT_JWT_MAX_LIFETIME_SECONDS`,
    /// [`JwtConfig::MAX_LIFETIME_RANGE`] seconds).
    pub max_lifetime: Duration,
}

impl JwtConfig {
    /// Accepted values of `max_lifetime`, in seconds (a minute to a year).
    pub const MAX_LIFETIME_RANGE: std::ops::RangeInclusive<u64> = 60..=365 * 24 * 3600;
}

impl Default for JwtConfig {
    /// No issuer or audience required; 30 days at most.
    fn default() -> Self {
        JwtConfig {
            issuer: None,
            audience: None,
            max_lifetime: callcat_axum::DEFAULT_MAX_TOKEN_LIFETIME,
        }
    }
}

/// Limits of the HTTP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Until a response must start (`CALLCAT_REQUEST_TIMEOUT_SECONDS`, 1..=3600 s).
    pub request_timeout: Duration,
    /// Requests handled at once; as many more may wait
    /// (`CALLCAT_MAX_CONCURRENT_REQUESTS`, 1..=100000).
    pub max_concurrent_requests: usize,
    /// Until a client must have sent a request's headers
    /// (`CALLCAT_HEADER_READ_TIMEOUT_SECONDS`, 1..=300 s).
    pub header_read_timeout: Duration,
    /// Largest webhook body (`CALLCAT_WEBHOOK_BODY_LIMIT_BYTES`, 1024..=16 MiB).
    pub webhook_body_limit: usize,
    /// Webhook requests handled at once (`CALLCAT_MAX_CONCURRENT_WEBHOOKS`, 1..=10000).
    pub max_concurrent_webhooks: usize,
    /// The header a trusted proxy names the client in (`CALLCAT_TRUSTED_PROXY_HEADER`).
    pub trusted_proxy_header: Option<String>,
}

impl Default for HttpConfig {
    /// 30 s per request, 256 at once, 10 s for headers, 256 KiB webhook bodies,
    /// 64 webhooks at once, the peer address as the source.
    fn default() -> Self {
        HttpConfig {
            request_timeout: callcat_axum::DEFAULT_REQUEST_TIMEOUT,
            max_concurrent_requests: callcat_axum::DEFAULT_MAX_CONCURRENT_REQUESTS,
            header_read_timeout: Duration::from_secs(10),
            webhook_body_limit: callcat_axum::WEBHOOK_BODY_LIMIT,
            max_concurrent_webhooks: callcat_axum::DEFAULT_MAX_CONCURRENT_WEBHOOKS,
            trusted_proxy_header: None,
        }
    }
}

impl Default for Config {
    /// In-memory storage, the simulator, development mode, 127.0.0.1:8080, the
    /// default dispatch limits, no tenant labels on metrics.
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            store: StoreConfig::Memory,
            telephony: TelephonyConfig::Simulator,
            public_url: None,
            jwt_secret: None,
            master_key: None,
            dispatch: DispatchConfig::default(),
            metrics_tenant_labels: false,
            metrics_token: None,
            jwt: JwtConfig::default(),
            http: HttpConfig::default(),
            caller_numbers: None,
            one_open_call_per_user: false,
            admin: None,
        }
    }
}

/// Dispatch limits: concurrency caps, default attempts, shutdown drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DispatchConfig {
    /// Most calls being dialed or on the line at once, over all owners
    /// (`CALLCAT_GLOBAL_CAP`, [`DispatchConfig::GLOBAL_CAP_RANGE`]).
    pub global_cap: usize,
    /// Most calls per owner being dialed or on the line at once; `None` is no
    /// cap (`CALLCAT_OWNER_CAP`, `0` for none, at most [`DispatchConfig::MAX_OWNER_CAP`]).
    pub owner_cap: Option<usize>,
    /// Dial attempts for a call that does not give its own
    /// (`CALLCAT_MAX_ATTEMPTS`, 1 to [`callcat_core::retry::MAX_ATTEMPTS_LIMIT`]).
    pub max_attempts: u32,
    /// How long shutdown waits for dials in flight (`CALLCAT_DRAIN_SECONDS`,
    /// at most [`DispatchConfig::MAX_DRAIN_SECONDS`]).
    pub drain: Duration,
}

impl DispatchConfig {
    /// Accepted values of `global_cap`.
    pub const GLOBAL_CAP_RANGE: std::ops::RangeInclusive<usize> = 1..=10_000;
    /// Largest `owner_cap`.
    pub const MAX_OWNER_CAP: usize = 10_000;
    /// Longest drain, in seconds.
    pub const MAX_DRAIN_SECONDS: u64 = 300;
}

impl Default for DispatchConfig {
    /// The scheduler's defaults (20 at once, 1 per owner), the retry policy's
    /// default attempts (3), a 10 s drain.
    fn default() -> Self {
        let scheduler = callcat_core::SchedulerConfig::default();
        DispatchConfig {
            global_cap: scheduler.global_cap,
            owner_cap: scheduler.owner_cap,
            max_attempts: callcat_core::RetryPolicy::default().max_attempts,
            drain: Duration::from_secs(10),
        }
    }
}

/// The `--help` text: every setting's flag and environment variable.
pub fn usage() -> String {
    args::help()
}

impl Config {
    /// Reads the command-line arguments (without the program name) and, for
    /// every setting without a flag, the process environment.
    pub fn from_env_and_args(args: impl IntoIterator<Item = String>) -> Result<Self, ConfigError> {
        Self::resolve(&Args::from_env_and_args(args)?)
    }

    /// Reads settings from `args` (`--flag value` or `--flag=value`) and, for
    /// every setting without a flag, from `env` (a look-up by variable name)
    /// instead of the process environment.
    pub fn from_sources(
        env: impl Fn(&str) -> Option<String>,
        args: impl IntoIterator<Item = String>,
    ) -> Result<Self, ConfigError> {
        Self::resolve(&Args::from_sources(env, args)?)
    }

    fn resolve(a: &Args) -> Result<Self, ConfigError> {
        // A blank value is no value.
        let get = |v: &Option<String>| -> Option<String> {
            v.as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let required = |v: &Option<String>, setting: &'static str, when: &'static str| {
            get(v).ok_or(ConfigError::Missing {
                setting,
                when: Some(when),
            })
        };
        let mut c = Config::default();
        if let Some(l) = get(&a.listen) {
            c.listen = l.parse().map_err(|e| invalid("CALLCAT_LISTEN", e))?;
        }
        c.store = match get(&a.store).as_deref().unwrap_or("memory") {
            "memory" => StoreConfig::Memory,
            "postgres" => StoreConfig::Postgres {
                database_url: Secret::new(required(
                    &a.database_url,
                    "DATABASE_URL",
                    "CALLCAT_STORE=postgres",
                )?),
                schema: get(&a.postgres_schema),
            },
            "dynamo" => {
                let when = "CALLCAT_STORE=dynamo";
                StoreConfig::Dynamo(Box::new(DynamoConfig {
                    endpoint: get(&a.dynamo_endpoint)
                        .map(|u| parse_url("CALLCAT_DYNAMO_ENDPOINT", &u))
                        .transpose()?,
                    calls_table: get(&a.dynamo_calls_table)
                        .unwrap_or_else(|| "callcat-calls".into()),
                    transcripts_table: get(&a.dynamo_transcripts_table)
                        .unwrap_or_else(|| "callcat-transcripts".into()),
                    windows_table: get(&a.dynamo_windows_table)
                        .unwrap_or_else(|| "callcat-windows".into()),
                    do_not_call_table: get(&a.dynamo_do_not_call_table)
                        .unwrap_or_else(|| "callcat-do-not-call".into()),
                    create_tables: parse_bool(
                        "CALLCAT_DYNAMO_CREATE_TABLES",
                        get(&a.dynamo_create_tables),
                    )?,
                    region: get(&a.aws_region).unwrap_or_else(|| "us-east-1".into()),
                    access_key_id: required(&a.aws_access_key_id, "AWS_ACCESS_KEY_ID", when)?,
                    secret_access_key: Secret::new(required(
                        &a.aws_secret_access_key,
                        "AWS_SECRET_ACCESS_KEY",
                        when,
                    )?),
                    session_token: get(&a.aws_session_token).map(Secret::new),
                }))
            }
            other => {
                return Err(invalid(
                    "CALLCAT_STORE",
                    format!("{other:?} is not one of memory, postgres, dynamo"),
                ));
            }
        };
        c.telephony = match get(&a.telephony).as_deref().unwrap_or("simulator") {
            "simulator" => TelephonyConfig::Simulator,
            "retell" => {
                let when = "CALLCAT_TELEPHONY=retell";
                TelephonyConfig::Retell {
                    api_key: Secret::new(required(&a.retell_api_key, "RETELL_API_KEY", when)?),
                    base_url: get(&a.retell_base_url)
                        .map(|u| parse_url("RETELL_BASE_URL", &u))
                        .transpose()?,
                    from_number: phone(
                        "RETELL_FROM_NUMBER",
                        &required(&a.retell_from_number, "RETELL_FROM_NUMBER", when)?,
                    )?,
                    agent_id: required(&a.retell_agent_id, "RETELL_AGENT_ID", when)?,
                }
            }
            "twilio" => {
                let when = "CALLCAT_TELEPHONY=twilio";
                let sid = required(&a.twilio_account_sid, "TWILIO_ACCOUNT_SID", when)?;
                if !sid.starts_with("AC") || sid.len() != 34 {
                    return Err(invalid(
                        "TWILIO_ACCOUNT_SID",
                        "an account SID is AC followed by 32 hex digits",
                    ));
                }
                TelephonyConfig::Twilio {
                    account_sid: sid,
                    auth_token: Secret::new(required(
                        &a.twilio_auth_token,
                        "TWILIO_AUTH_TOKEN",
                        when,
                    )?),
                    from_number: phone(
                        "TWILIO_FROM_NUMBER",
                        &required(&a.twilio_from_number, "TWILIO_FROM_NUMBER", when)?,
                    )?,
                    base_url: get(&a.twilio_base_url)
                        .map(|u| parse_url("TWILIO_BASE_URL", &u))
                        .transpose()?,
                }
            }
            other => {
                return Err(invalid(
                    "CALLCAT_TELEPHONY",
                    format!("{other:?} is not one of simulator, retell, twilio"),
                ));
            }
        };
        c.public_url = get(&a.public_url)
            .map(|u| parse_url("CALLCAT_PUBLIC_URL", u.trim_end_matches('/')))
            .transpose()?;
        if matches!(c.telephony, TelephonyConfig::Twilio { .. }) && c.public_url.is_none() {
            return Err(ConfigError::Missing {
                setting: "CALLCAT_PUBLIC_URL",
                when: Some("CALLCAT_TELEPHONY=twilio (Twilio calls back and signs that URL)"),
            });
        }
        if let Some(s) = get(&a.jwt_secret) {
            if s.len() < 32 {
                return Err(invalid(
                    "CALLCAT_JWT_SECRET",
                    format!("{} bytes; at least 32 are needed for HS256", s.len()),
                ));
            }
            c.jwt_secret = Some(Secret::new(s));
        }
        if let Some(k) = get(&a.master_key) {
            c.master_key =
                Some(MasterKeys::parse(&k).map_err(|r| invalid("CALLCAT_MASTER_KEY", r))?);
        }
        c.admin = match (a.rekey, a.key_report) {
            (true, _) => Some(AdminCommand::Rekey),
            (false, true) => Some(AdminCommand::KeyReport),
            (false, false) => None,
        };
        if c.admin.is_some() && c.master_key.is_none() {
            return Err(ConfigError::Missing {
                setting: "CALLCAT_MASTER_KEY",
                when: Some("--rekey or --key-report is given"),
            });
        }
        c.metrics_tenant_labels = parse_bool(
            "CALLCAT_METRICS_TENANT_LABELS",
            get(&a.metrics_tenant_labels),
        )?;
        c.one_open_call_per_user = parse_bool(
            "CALLCAT_ONE_OPEN_CALL_PER_USER",
            get(&a.one_open_call_per_user),
        )?;
        if let Some(t) = get(&a.metrics_token) {
            if t.len() < 16 {
                return Err(invalid(
                    "CALLCAT_METRICS_TOKEN",
                    format!("{} bytes; at least 16 are needed", t.len()),
                ));
            }
            c.metrics_token = Some(Secret::new(t));
        }
        c.dispatch = Self::dispatch(a, &get)?;
        c.jwt = JwtConfig {
            issuer: get(&a.jwt_issuer),
            audience: get(&a.jwt_audience),
            max_lifetime: match get(&a.jwt_max_lifetime_seconds) {
                Some(v) => Duration::from_secs(bounded(
                    "CALLCAT_JWT_MAX_LIFETIME_SECONDS",
                    &v,
                    *JwtConfig::MAX_LIFETIME_RANGE.start(),
                    *JwtConfig::MAX_LIFETIME_RANGE.end(),
                )?),
                None => JwtConfig::default().max_lifetime,
            },
        };
        c.http = Self::http(a, &get)?;
        c.caller_numbers = get(&a.caller_numbers)
            .map(|v| CallerNumbersConfig::parse(&v))
            .transpose()?;
        c.check()?;
        Ok(c)
    }

    fn http(
        a: &Args,
        get: &dyn Fn(&Option<String>) -> Option<String>,
    ) -> Result<HttpConfig, ConfigError> {
        let d = HttpConfig::default();
        let num = |v: &Option<String>, setting: &'static str, min: u64, max: u64, default: u64| {
            get(v).map_or(Ok(default), |v| bounded(setting, &v, min, max))
        };
        let header = get(&a.trusted_proxy_header).map(|h| h.to_ascii_lowercase());
        if let Some(h) = &header
            && http::HeaderName::try_from(h.as_str()).is_err()
        {
            return Err(invalid(
                "CALLCAT_TRUSTED_PROXY_HEADER",
                format!("{h:?} is not a header name"),
            ));
        }
        Ok(HttpConfig {
            request_timeout: Duration::from_secs(num(
                &a.request_timeout_seconds,
                "CALLCAT_REQUEST_TIMEOUT_SECONDS",
                1,
                3600,
                d.request_timeout.as_secs(),
            )?),
            max_concurrent_requests: num(
                &a.max_concurrent_requests,
                "CALLCAT_MAX_CONCURRENT_REQUESTS",
                1,
                100_000,
                d.max_concurrent_requests as u64,
            )? as usize,
            header_read_timeout: Duration::from_secs(num(
                &a.header_read_timeout_seconds,
                "CALLCAT_HEADER_READ_TIMEOUT_SECONDS",
                1,
                300,
                d.header_read_timeout.as_secs(),
            )?),
            webhook_body_limit: num(
                &a.webhook_body_limit_bytes,
                "CALLCAT_WEBHOOK_BODY_LIMIT_BYTES",
                1024,
                callcat_axum::MAX_BODY_LIMIT as u64,
                d.webhook_body_limit as u64,
            )? as usize,
            max_concurrent_webhooks: num(
                &a.max_concurrent_webhooks,
                "CALLCAT_MAX_CONCURRENT_WEBHOOKS",
                1,
                10_000,
                d.max_concurrent_webhooks as u64,
            )? as usize,
            trusted_proxy_header: header,
        })
    }

    /// Checks what no single setting can: without a JWT secret (development
    /// mode, a generated secret and a printed demo token) the server only
    /// listens on a loopback address.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.jwt_secret.is_none() && !self.listen.ip().is_loopback() {
            return Err(ConfigError::Missing {
                setting: "CALLCAT_JWT_SECRET",
                when: Some(
                    "CALLCAT_LISTEN is not a loopback address (without it the server runs in \
                     development mode, which only listens on 127.0.0.1 or ::1)",
                ),
            });
        }
        Ok(())
    }

    fn dispatch(
        a: &Args,
        get: &dyn Fn(&Option<String>) -> Option<String>,
    ) -> Result<DispatchConfig, ConfigError> {
        let d = DispatchConfig::default();
        let global_cap = match get(&a.global_cap) {
            Some(v) => bounded(
                "CALLCAT_GLOBAL_CAP",
                &v,
                *DispatchConfig::GLOBAL_CAP_RANGE.start() as u64,
                *DispatchConfig::GLOBAL_CAP_RANGE.end() as u64,
            )? as usize,
            None => d.global_cap,
        };
        let owner_cap = match get(&a.owner_cap) {
            Some(v) => match bounded(
                "CALLCAT_OWNER_CAP",
                &v,
                0,
                DispatchConfig::MAX_OWNER_CAP as u64,
            )? {
                0 => None,
                n => Some(n as usize),
            },
            None => d.owner_cap,
        };
        let max_attempts = match get(&a.max_attempts) {
            Some(v) => bounded(
                "CALLCAT_MAX_ATTEMPTS",
                &v,
                1,
                u64::from(callcat_core::retry::MAX_ATTEMPTS_LIMIT),
            )? as u32,
            None => d.max_attempts,
        };
        let drain = match get(&a.drain_seconds) {
            Some(v) => Duration::from_secs(bounded(
                "CALLCAT_DRAIN_SECONDS",
                &v,
                0,
                DispatchConfig::MAX_DRAIN_SECONDS,
            )?),
            None => d.drain,
        };
        Ok(DispatchConfig {
            global_cap,
            owner_cap,
            max_attempts,
            drain,
        })
    }

    /// The base URL the outside world reaches this server at: `public_url`, or
    /// `http://` + the listen address.
    pub fn base_url(&self) -> String {
        match &self.public_url {
            Some(u) => u.as_str().trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.listen),
        }
    }
}

fn invalid(setting: &'static str, reason: impl fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        setting,
        reason: reason.to_string(),
    }
}

/// A whole number in `min..=max`.
fn bounded(setting: &'static str, v: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    let n: u64 = v
        .parse()
        .map_err(|_| invalid(setting, format!("{v:?} is not a whole number")))?;
    if !(min..=max).contains(&n) {
        return Err(invalid(setting, format!("{n} is outside {min}..={max}")));
    }
    Ok(n)
}

fn parse_url(setting: &'static str, s: &str) -> Result<Url, ConfigError> {
    let u = Url::parse(s).map_err(|e| invalid(setting, e))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(invalid(setting, "must be an http or https URL"));
    }
    Ok(u)
}

fn parse_bool(setting: &'static str, v: Option<String>) -> Result<bool, ConfigError> {
    match v.as_deref() {
        None | Some("0") | Some("false") => Ok(false),
        Some("1") | Some("true") => Ok(true),
        Some(other) => Err(invalid(setting, format!("{other:?} is not 1 or 0"))),
    }
}

fn phone(setting: &'static str, s: &str) -> Result<PhoneNumber, ConfigError> {
    PhoneNumber::parse(s).map_err(|e| invalid(setting, e))
}

#[cfg(test)]
mod tests;
