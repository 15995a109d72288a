//! Server configuration from environment variables and matching command-line flags.
//!
//! Every setting is an environment variable (`CALLCAT_LISTEN`, `DATABASE_URL`, ...)
//! and a lower-case flag (`--listen`, `--database-url`, ...); a flag wins over the
//! variable. A missing or invalid setting is a [`ConfigError`] naming it.

use std::fmt;
use std::net::SocketAddr;

use base64::Engine as _;
use callcat_core::PhoneNumber;
use url::Url;

/// The settings, as (environment variable, what it is). The flag of each is its
/// name in lower case with `_` as `-` and without the `CALLCAT_` prefix.
pub const SETTINGS: &[(&str, &str)] = &[
    (
        "CALLCAT_LISTEN",
        "address to listen on (default 127.0.0.1:8080)",
    ),
    (
        "CALLCAT_STORE",
        "memory | postgres | dynamo (default memory)",
    ),
    ("DATABASE_URL", "PostgreSQL URL (store = postgres)"),
    (
        "CALLCAT_POSTGRES_SCHEMA",
        "PostgreSQL schema for callcat's tables (default: search_path)",
    ),
    (
        "CALLCAT_DYNAMO_ENDPOINT",
        "DynamoDB endpoint URL (store = dynamo; default: AWS)",
    ),
    (
        "CALLCAT_DYNAMO_CALLS_TABLE",
        "DynamoDB calls table (default callcat-calls)",
    ),
    (
        "CALLCAT_DYNAMO_TRANSCRIPTS_TABLE",
        "DynamoDB transcripts table (default callcat-transcripts)",
    ),
    (
        "CALLCAT_DYNAMO_WINDOWS_TABLE",
        "DynamoDB windows table (default callcat-windows)",
    ),
    (
        "CALLCAT_DYNAMO_CREATE_TABLES",
        "1 to create the DynamoDB tables at start-up",
    ),
    (
        "CALLCAT_TELEPHONY",
        "simulator | retell | twilio (default simulator)",
    ),
    ("RETELL_API_KEY", "Retell API key (telephony = retell)"),
    (
        "RETELL_BASE_URL",
        "Retell API base URL (default https://api.retellai.com)",
    ),
    (
        "RETELL_FROM_NUMBER",
        "number Retell calls from, E.164 (telephony = retell)",
    ),
    ("RETELL_AGENT_ID", "Retell agent id (telephony = retell)"),
    (
        "TWILIO_ACCOUNT_SID",
        "Twilio account SID (telephony = twilio)",
    ),
    (
        "TWILIO_AUTH_TOKEN",
        "Twilio auth token (telephony = twilio)",
    ),
    (
        "TWILIO_FROM_NUMBER",
        "number Twilio calls from, E.164 (telephony = twilio)",
    ),
    (
        "TWILIO_BASE_URL",
        "Twilio API base URL (default https://api.twilio.com)",
    ),
    (
        "CALLCAT_PUBLIC_URL",
        "externally visible base URL (callbacks, Twilio signatures)",
    ),
    (
        "CALLCAT_JWT_SECRET",
        "HS256 secret, at least 32 bytes (unset: development mode)",
    ),
    (
        "CALLCAT_MASTER_KEY",
        "base64 of 32 bytes, the master key for encryption at rest",
    ),
];

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
}

impl Default for Config {
    /// In-memory storage, the simulator, development mode, 127.0.0.1:8080.
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            store: StoreConfig::Memory,
            telephony: TelephonyConfig::Simulator,
            public_url: None,
            jwt_secret: None,
            master_key: None,
        }
    }
}

/// `--listen` for `CALLCAT_LISTEN`, `--database-url` for `DATABASE_URL`.
pub fn flag_of(var: &str) -> String {
    let name = var.strip_prefix("CALLCAT_").unwrap_or(var);
    format!("--{}", name.to_ascii_lowercase().replace('_', "-"))
}

/// The `--help` text.
pub fn usage() -> String {
    let mut s = String::from(
        "callcat example server\n\nEvery setting is an environment variable or a flag (the flag wins):\n\n",
    );
    for (var, what) in SETTINGS {
        s.push_str(&format!("  {:<38} {var}\n      {what}\n", flag_of(var)));
    }
    s
}

impl Config {
    /// Reads the process environment and command-line arguments (without the program name).
    pub fn from_env_and_args(args: impl IntoIterator<Item = String>) -> Result<Self, ConfigError> {
        Self::from_sources(|k| std::env::var(k).ok(), args)
    }

    /// Reads settings from `env` (a look-up by variable name) and `args`
    /// (`--flag value` or `--flag=value`; flags win).
    pub fn from_sources(
        env: impl Fn(&str) -> Option<String>,
        args: impl IntoIterator<Item = String>,
    ) -> Result<Self, ConfigError> {
        let mut flags: Vec<(&'static str, String)> = Vec::new();
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            if arg == "--help" || arg == "-h" {
                return Err(ConfigError::Help(usage()));
            }
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
                None => (arg.clone(), None),
            };
            let Some((var, _)) = SETTINGS.iter().find(|(v, _)| flag_of(v) == name) else {
                return Err(ConfigError::UnknownFlag(arg));
            };
            let value = match inline {
                Some(v) => v,
                None => it.next().ok_or(ConfigError::MissingValue(name))?,
            };
            flags.push((var, value));
        }
        let get = |var: &str| -> Option<String> {
            flags
                .iter()
                .rev()
                .find(|(v, _)| *v == var)
                .map(|(_, val)| val.clone())
                .or_else(|| env(var))
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        Self::resolve(&get)
    }

    fn resolve(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut c = Config::default();
        if let Some(l) = get("CALLCAT_LISTEN") {
            c.listen = l.parse().map_err(|e| invalid("CALLCAT_LISTEN", e))?;
        }
        c.store = match get("CALLCAT_STORE").as_deref().unwrap_or("memory") {
            "memory" => StoreConfig::Memory,
            "postgres" => StoreConfig::Postgres {
                database_url: Secret::new(required(get, "DATABASE_URL", "CALLCAT_STORE=postgres")?),
                schema: get("CALLCAT_POSTGRES_SCHEMA"),
            },
            "dynamo" => StoreConfig::Dynamo(Box::new(DynamoConfig {
                endpoint: get("CALLCAT_DYNAMO_ENDPOINT")
                    .map(|u| parse_url("CALLCAT_DYNAMO_ENDPOINT", &u))
                    .transpose()?,
                calls_table: get("CALLCAT_DYNAMO_CALLS_TABLE")
                    .unwrap_or_else(|| "callcat-calls".into()),
                transcripts_table: get("CALLCAT_DYNAMO_TRANSCRIPTS_TABLE")
                    .unwrap_or_else(|| "callcat-transcripts".into()),
                windows_table: get("CALLCAT_DYNAMO_WINDOWS_TABLE")
                    .unwrap_or_else(|| "callcat-windows".into()),
                create_tables: parse_bool(
                    "CALLCAT_DYNAMO_CREATE_TABLES",
                    get("CALLCAT_DYNAMO_CREATE_TABLES"),
                )?,
                region: get("AWS_REGION").unwrap_or_else(|| "us-east-1".into()),
                access_key_id: required(get, "AWS_ACCESS_KEY_ID", "CALLCAT_STORE=dynamo")?,
                secret_access_key: Secret::new(required(
                    get,
                    "AWS_SECRET_ACCESS_KEY",
                    "CALLCAT_STORE=dynamo",
                )?),
                session_token: get("AWS_SESSION_TOKEN").map(Secret::new),
            })),
            other => {
                return Err(invalid(
                    "CALLCAT_STORE",
                    format!("{other:?} is not one of memory, postgres, dynamo"),
                ));
            }
        };
        c.telephony = match get("CALLCAT_TELEPHONY").as_deref().unwrap_or("simulator") {
            "simulator" => TelephonyConfig::Simulator,
            "retell" => {
                let when = "CALLCAT_TELEPHONY=retell";
                TelephonyConfig::Retell {
                    api_key: Secret::new(required(get, "RETELL_API_KEY", when)?),
                    base_url: get("RETELL_BASE_URL")
                        .map(|u| parse_url("RETELL_BASE_URL", &u))
                        .transpose()?,
                    from_number: phone(
                        "RETELL_FROM_NUMBER",
                        &required(get, "RETELL_FROM_NUMBER", when)?,
                    )?,
                    agent_id: required(get, "RETELL_AGENT_ID", when)?,
                }
            }
            "twilio" => {
                let when = "CALLCAT_TELEPHONY=twilio";
                let sid = required(get, "TWILIO_ACCOUNT_SID", when)?;
                if !sid.starts_with("AC") || sid.len() != 34 {
                    return Err(invalid(
                        "TWILIO_ACCOUNT_SID",
                        "an account SID is AC followed by 32 hex digits",
                    ));
                }
                TelephonyConfig::Twilio {
                    account_sid: sid,
                    auth_token: Secret::new(required(get, "TWILIO_AUTH_TOKEN", when)?),
                    from_number: phone(
                        "TWILIO_FROM_NUMBER",
                        &required(get, "TWILIO_FROM_NUMBER", when)?,
                    )?,
                    base_url: get("TWILIO_BASE_URL")
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
        c.public_url = get("CALLCAT_PUBLIC_URL")
            .map(|u| parse_url("CALLCAT_PUBLIC_URL", u.trim_end_matches('/')))
            .transpose()?;
        if matches!(c.telephony, TelephonyConfig::Twilio { .. }) && c.public_url.is_none() {
            return Err(ConfigError::Missing {
                setting: "CALLCAT_PUBLIC_URL",
                when: Some("CALLCAT_TELEPHONY=twilio (Twilio calls back and signs that URL)"),
            });
        }
        if let Some(s) = get("CALLCAT_JWT_SECRET") {
            if s.len() < 32 {
                return Err(invalid(
                    "CALLCAT_JWT_SECRET",
                    format!("{} bytes; at least 32 are needed for HS256", s.len()),
                ));
            }
            c.jwt_secret = Some(Secret::new(s));
        }
        if let Some(k) = get("CALLCAT_MASTER_KEY") {
            c.master_key =
                Some(MasterKeys::parse(&k).map_err(|r| invalid("CALLCAT_MASTER_KEY", r))?);
        }
        Ok(c)
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

fn required(
    get: &dyn Fn(&str) -> Option<String>,
    setting: &'static str,
    when: &'static str,
) -> Result<String, ConfigError> {
    get(setting).ok_or(ConfigError::Missing {
        setting,
        when: Some(when),
    })
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
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn cfg(env: &[(&str, &str)], args: &[&str]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_sources(|k| env.get(k).cloned(), args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults_are_memory_simulator_development() {
        let c = cfg(&[], &[]).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.base_url(), "http://127.0.0.1:8080");
    }

    #[test]
    fn flags_win_over_environment() {
        let c = cfg(
            &[("CALLCAT_LISTEN", "0.0.0.0:1")],
            &[
                "--listen",
                "127.0.0.1:9000",
                "--public-url=https://cc.example.com/",
            ],
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.base_url(), "https://cc.example.com");
    }

    #[test]
    fn errors_name_the_setting() {
        let e = cfg(&[("CALLCAT_STORE", "postgres")], &[]).unwrap_err();
        assert_eq!(e.setting(), Some("DATABASE_URL"));
        assert!(e.to_string().contains("DATABASE_URL is required"));
        let e = cfg(&[("CALLCAT_STORE", "dynamo")], &[]).unwrap_err();
        assert_eq!(e.setting(), Some("AWS_ACCESS_KEY_ID"));
        let e = cfg(&[("CALLCAT_LISTEN", "nope")], &[]).unwrap_err();
        assert_eq!(e.setting(), Some("CALLCAT_LISTEN"));
        let e = cfg(&[("CALLCAT_STORE", "redis")], &[]).unwrap_err();
        assert_eq!(e.setting(), Some("CALLCAT_STORE"));
        let e = cfg(&[("CALLCAT_JWT_SECRET", "short")], &[]).unwrap_err();
        assert_eq!(e.setting(), Some("CALLCAT_JWT_SECRET"));
        let e = cfg(&[("CALLCAT_MASTER_KEY", "AAAA")], &[]).unwrap_err();
        assert_eq!(e.setting(), Some("CALLCAT_MASTER_KEY"));
        assert!(e.to_string().contains("32"));
        let e = cfg(
            &[
                ("CALLCAT_TELEPHONY", "retell"),
                ("RETELL_API_KEY", "key"),
                ("RETELL_AGENT_ID", "agent"),
                ("RETELL_FROM_NUMBER", "12345"),
            ],
            &[],
        )
        .unwrap_err();
        assert_eq!(e.setting(), Some("RETELL_FROM_NUMBER"));
        let e = cfg(
            &[
                ("CALLCAT_TELEPHONY", "twilio"),
                ("TWILIO_ACCOUNT_SID", &format!("AC{}", "0".repeat(32))),
                ("TWILIO_AUTH_TOKEN", "tok"),
                ("TWILIO_FROM_NUMBER", "+14155552671"),
            ],
            &[],
        )
        .unwrap_err();
        assert_eq!(e.setting(), Some("CALLCAT_PUBLIC_URL"));
        assert_eq!(
            cfg(&[], &["--nope", "x"]).unwrap_err(),
            ConfigError::UnknownFlag("--nope".into())
        );
        assert_eq!(
            cfg(&[], &["--listen"]).unwrap_err(),
            ConfigError::MissingValue("--listen".into())
        );
        assert!(matches!(cfg(&[], &["--help"]), Err(ConfigError::Help(_))));
    }

    #[test]
    fn debug_hides_secrets() {
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let c = cfg(
            &[
                ("CALLCAT_STORE", "postgres"),
                ("DATABASE_URL", "postgres://u:hunter2@db/x"),
                ("CALLCAT_JWT_SECRET", "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t"),
                ("CALLCAT_MASTER_KEY", &key),
                ("CALLCAT_TELEPHONY", "retell"),
                ("RETELL_API_KEY", "key_abcdef"),
                ("RETELL_AGENT_ID", "agent"),
                ("RETELL_FROM_NUMBER", "+14155552671"),
            ],
            &[],
        )
        .unwrap();
        let d = format!("{c:?}");
        for secret in ["hunter2", "s3cr3t", "key_abcdef", &key] {
            assert!(!d.contains(secret), "{secret} leaked in {d}");
        }
        assert!(!d.contains("+14155552671"));
        let keys = c.master_key.unwrap();
        assert_eq!(keys, MasterKeys(vec![(1, [7u8; 32])]));
        assert_eq!(keys.cipher().unwrap().current_key_id(), 1);
        let ring = MasterKeys::parse(&format!("2:{key},1:{key}")).unwrap();
        assert_eq!(ring.current_id(), Some(2));
        assert!(MasterKeys::parse(&format!("1:{key},1:{key}")).is_err());
        assert!(MasterKeys::parse("x:AAAA").is_err());
    }
}
