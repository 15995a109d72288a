//! The settings as a command line (clap): one flag per setting, each backed by
//! its environment variable; a flag wins over the variable. Values are kept as
//! text here and validated by [`super::Config`]'s resolution, so every error
//! names the setting's variable.

use clap::{CommandFactory as _, FromArgMatches as _, Parser};

use super::ConfigError;

/// Every setting, as it arrives: a flag or, failing that, its environment variable.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "callcat-server",
    about = "The callcat example server: the HTTP API, webhooks, live events and metrics.",
    long_about = None,
    after_help = "Every setting is a flag or the environment variable shown beside it; a flag wins.",
    disable_version_flag = true,
    args_override_self = true
)]
pub(crate) struct Args {
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "CALLCAT_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Externally visible base URL (callbacks, Twilio signatures)
    #[arg(long, env = "CALLCAT_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// HS256 secret, at least 32 bytes (unset: development mode)
    #[arg(long, env = "CALLCAT_JWT_SECRET", value_name = "SECRET")]
    pub jwt_secret: Option<String>,
    /// Master key for encryption at rest: base64 of 32 bytes, or `2:<base64>,1:<base64>`
    #[arg(long, env = "CALLCAT_MASTER_KEY", value_name = "KEYS")]
    pub master_key: Option<String>,
    /// 1 to label the active-calls gauge with tenant names (default 0: totals only)
    #[arg(long, env = "CALLCAT_METRICS_TENANT_LABELS", value_name = "0|1")]
    pub metrics_tenant_labels: Option<String>,
    /// Caller numbers each tenant may give, e.g. acme=+14155550100|+14155550101;beta=+14155550200
    /// (unset: only the provider's from-number; none with the simulator)
    #[arg(
        long,
        env = "CALLCAT_CALLER_NUMBERS",
        value_name = "TENANT=NUMBERS;..."
    )]
    pub caller_numbers: Option<String>,
    /// 1: a user may have only one open call (SCHEDULED, RETRY_PENDING or in flight);
    /// creating another answers 409 naming it (default 0)
    #[arg(long, env = "CALLCAT_ONE_OPEN_CALL_PER_USER", value_name = "0|1")]
    pub one_open_call_per_user: Option<String>,
    /// Bearer token /metrics requires, at least 16 bytes (unset: /metrics is open)
    #[arg(long, env = "CALLCAT_METRICS_TOKEN", value_name = "TOKEN")]
    pub metrics_token: Option<String>,

    /// Re-encrypt stored rows still under an old master key (CALLCAT_MASTER_KEY
    /// lists the current key first, then the old ones), print the rows left
    /// under each key, and exit
    #[arg(long, help_heading = "Administration")]
    pub rekey: bool,
    /// Print how many stored rows are under each master key, and exit
    #[arg(long, help_heading = "Administration")]
    pub key_report: bool,

    /// Issuer (`iss`) every token must carry [default: not checked]
    #[arg(
        long,
        env = "CALLCAT_JWT_ISSUER",
        value_name = "ISS",
        help_heading = "Authentication"
    )]
    pub jwt_issuer: Option<String>,
    /// Audience (`aud`) every token must name [default: not checked]
    #[arg(
        long,
        env = "CALLCAT_JWT_AUDIENCE",
        value_name = "AUD",
        help_heading = "Authentication"
    )]
    pub jwt_audience: Option<String>,
    /// Longest token lifetime accepted (exp ahead of now or iat), 60..=31536000 [default: 2592000, 30 days]
    #[arg(
        long,
        env = "CALLCAT_JWT_MAX_LIFETIME_SECONDS",
        value_name = "SECONDS",
        help_heading = "Authentication"
    )]
    pub jwt_max_lifetime_seconds: Option<String>,

    /// Seconds until a request's response must start (else 408), 1..=3600 [default: 30]
    #[arg(
        long,
        env = "CALLCAT_REQUEST_TIMEOUT_SECONDS",
        value_name = "SECONDS",
        help_heading = "HTTP limits"
    )]
    pub request_timeout_seconds: Option<String>,
    /// Requests handled at once (as many more wait; beyond, 503), 1..=100000 [default: 256]
    #[arg(
        long,
        env = "CALLCAT_MAX_CONCURRENT_REQUESTS",
        value_name = "N",
        help_heading = "HTTP limits"
    )]
    pub max_concurrent_requests: Option<String>,
    /// Seconds a client has to send a request's headers (else the connection closes), 1..=300 [default: 10]
    #[arg(
        long,
        env = "CALLCAT_HEADER_READ_TIMEOUT_SECONDS",
        value_name = "SECONDS",
        help_heading = "HTTP limits"
    )]
    pub header_read_timeout_seconds: Option<String>,
    /// Largest webhook body in bytes, 1024..=16777216 [default: 262144]
    #[arg(
        long,
        env = "CALLCAT_WEBHOOK_BODY_LIMIT_BYTES",
        value_name = "BYTES",
        help_heading = "HTTP limits"
    )]
    pub webhook_body_limit_bytes: Option<String>,
    /// Webhook requests handled at once (beyond, 503), 1..=10000 [default: 64]
    #[arg(
        long,
        env = "CALLCAT_MAX_CONCURRENT_WEBHOOKS",
        value_name = "N",
        help_heading = "HTTP limits"
    )]
    pub max_concurrent_webhooks: Option<String>,
    /// Header in which a trusted reverse proxy names the client (e.g. x-forwarded-for; last entry) [default: the peer address]
    #[arg(
        long,
        env = "CALLCAT_TRUSTED_PROXY_HEADER",
        value_name = "HEADER",
        help_heading = "HTTP limits"
    )]
    pub trusted_proxy_header: Option<String>,

    /// Most calls being dialed or on the line at once, 1..=10000 [default: 20]
    #[arg(
        long,
        env = "CALLCAT_GLOBAL_CAP",
        value_name = "N",
        help_heading = "Dialing"
    )]
    pub global_cap: Option<String>,
    /// Most calls per owner being dialed or on the line at once, 0 (no cap)..=10000 [default: 1]
    #[arg(
        long,
        env = "CALLCAT_OWNER_CAP",
        value_name = "N",
        help_heading = "Dialing"
    )]
    pub owner_cap: Option<String>,
    /// Dial attempts for a call (or a call window's call) that does not say, 1..=20 [default: 3]
    #[arg(
        long,
        env = "CALLCAT_MAX_ATTEMPTS",
        value_name = "N",
        help_heading = "Dialing"
    )]
    pub max_attempts: Option<String>,
    /// Seconds shutdown waits for in-flight dials, 0..=300 [default: 10]
    #[arg(
        long,
        env = "CALLCAT_DRAIN_SECONDS",
        value_name = "SECONDS",
        help_heading = "Dialing"
    )]
    pub drain_seconds: Option<String>,

    /// memory | postgres | dynamo [default: memory]
    #[arg(
        long,
        env = "CALLCAT_STORE",
        value_name = "STORE",
        help_heading = "Storage"
    )]
    pub store: Option<String>,
    /// PostgreSQL URL (store = postgres)
    #[arg(
        long,
        env = "DATABASE_URL",
        value_name = "URL",
        help_heading = "Storage"
    )]
    pub database_url: Option<String>,
    /// PostgreSQL schema for callcat's tables [default: the search_path]
    #[arg(
        long,
        env = "CALLCAT_POSTGRES_SCHEMA",
        value_name = "SCHEMA",
        help_heading = "Storage"
    )]
    pub postgres_schema: Option<String>,
    /// DynamoDB endpoint URL (store = dynamo) [default: AWS]
    #[arg(
        long,
        env = "CALLCAT_DYNAMO_ENDPOINT",
        value_name = "URL",
        help_heading = "Storage"
    )]
    pub dynamo_endpoint: Option<String>,
    /// DynamoDB calls table [default: callcat-calls]
    #[arg(
        long,
        env = "CALLCAT_DYNAMO_CALLS_TABLE",
        value_name = "TABLE",
        help_heading = "Storage"
    )]
    pub dynamo_calls_table: Option<String>,
    /// DynamoDB transcripts table [default: callcat-transcripts]
    #[arg(
        long,
        env = "CALLCAT_DYNAMO_TRANSCRIPTS_TABLE",
        value_name = "TABLE",
        help_heading = "Storage"
    )]
    pub dynamo_transcripts_table: Option<String>,
    /// DynamoDB windows table [default: callcat-windows]
    #[arg(
        long,
        env = "CALLCAT_DYNAMO_WINDOWS_TABLE",
        value_name = "TABLE",
        help_heading = "Storage"
    )]
    pub dynamo_windows_table: Option<String>,
    /// DynamoDB do-not-call table [default: callcat-do-not-call]
    #[arg(
        long,
        env = "CALLCAT_DYNAMO_DO_NOT_CALL_TABLE",
        value_name = "TABLE",
        help_heading = "Storage"
    )]
    pub dynamo_do_not_call_table: Option<String>,
    /// 1 to create the DynamoDB tables at start-up
    #[arg(
        long,
        env = "CALLCAT_DYNAMO_CREATE_TABLES",
        value_name = "0|1",
        help_heading = "Storage"
    )]
    pub dynamo_create_tables: Option<String>,
    /// AWS region (store = dynamo) [default: us-east-1]
    #[arg(
        long,
        env = "AWS_REGION",
        value_name = "REGION",
        help_heading = "Storage"
    )]
    pub aws_region: Option<String>,
    /// AWS access key id (store = dynamo)
    #[arg(
        long,
        env = "AWS_ACCESS_KEY_ID",
        value_name = "ID",
        help_heading = "Storage"
    )]
    pub aws_access_key_id: Option<String>,
    /// AWS secret access key (store = dynamo)
    #[arg(
        long,
        env = "AWS_SECRET_ACCESS_KEY",
        value_name = "KEY",
        help_heading = "Storage"
    )]
    pub aws_secret_access_key: Option<String>,
    /// AWS session token, for temporary credentials
    #[arg(
        long,
        env = "AWS_SESSION_TOKEN",
        value_name = "TOKEN",
        help_heading = "Storage"
    )]
    pub aws_session_token: Option<String>,

    /// simulator | retell | twilio [default: simulator]
    #[arg(
        long,
        env = "CALLCAT_TELEPHONY",
        value_name = "PROVIDER",
        help_heading = "Telephony"
    )]
    pub telephony: Option<String>,
    /// Retell API key, also the webhook signing key (telephony = retell)
    #[arg(
        long,
        env = "RETELL_API_KEY",
        value_name = "KEY",
        help_heading = "Telephony"
    )]
    pub retell_api_key: Option<String>,
    /// Retell API base URL [default: https://api.retellai.com]
    #[arg(
        long,
        env = "RETELL_BASE_URL",
        value_name = "URL",
        help_heading = "Telephony"
    )]
    pub retell_base_url: Option<String>,
    /// Number Retell calls from, E.164 (telephony = retell)
    #[arg(
        long,
        env = "RETELL_FROM_NUMBER",
        value_name = "E164",
        help_heading = "Telephony"
    )]
    pub retell_from_number: Option<String>,
    /// Retell agent id (telephony = retell)
    #[arg(
        long,
        env = "RETELL_AGENT_ID",
        value_name = "ID",
        help_heading = "Telephony"
    )]
    pub retell_agent_id: Option<String>,
    /// Twilio account SID (telephony = twilio)
    #[arg(
        long,
        env = "TWILIO_ACCOUNT_SID",
        value_name = "SID",
        help_heading = "Telephony"
    )]
    pub twilio_account_sid: Option<String>,
    /// Twilio auth token, also the signature key (telephony = twilio)
    #[arg(
        long,
        env = "TWILIO_AUTH_TOKEN",
        value_name = "TOKEN",
        help_heading = "Telephony"
    )]
    pub twilio_auth_token: Option<String>,
    /// Number Twilio calls from, E.164 (telephony = twilio)
    #[arg(
        long,
        env = "TWILIO_FROM_NUMBER",
        value_name = "E164",
        help_heading = "Telephony"
    )]
    pub twilio_from_number: Option<String>,
    /// Twilio API base URL [default: https://api.twilio.com]
    #[arg(
        long,
        env = "TWILIO_BASE_URL",
        value_name = "URL",
        help_heading = "Telephony"
    )]
    pub twilio_base_url: Option<String>,
}

/// The command line, reading the process environment. Values of variables are
/// never shown in the help (some are secrets).
pub(crate) fn command() -> clap::Command {
    Args::command().mut_args(|a| a.hide_env_values(true))
}

/// The help text: every flag with its environment variable.
pub(crate) fn help() -> String {
    command().render_help().to_string()
}

impl Args {
    /// Parses `args` (without the program name) with `cmd`.
    fn parse_with(
        cmd: clap::Command,
        args: impl IntoIterator<Item = String>,
    ) -> Result<Args, ConfigError> {
        let argv = std::iter::once("callcat-server".to_owned()).chain(args);
        let matches = cmd.try_get_matches_from(argv).map_err(from_clap)?;
        Args::from_arg_matches(&matches).map_err(from_clap)
    }

    /// Flags from `args`, falling back to the process environment.
    pub(crate) fn from_env_and_args(
        args: impl IntoIterator<Item = String>,
    ) -> Result<Args, ConfigError> {
        Self::parse_with(command(), args)
    }

    /// Flags from `args`, falling back to `env` (a look-up by variable name)
    /// instead of the process environment: each variable's value becomes its
    /// flag's default, which is exactly where clap ranks the environment.
    pub(crate) fn from_sources(
        env: impl Fn(&str) -> Option<String>,
        args: impl IntoIterator<Item = String>,
    ) -> Result<Args, ConfigError> {
        let cmd = command().mut_args(|a| {
            let value = a.get_env().and_then(|v| v.to_str()).and_then(&env);
            let a = a.env(None::<&str>);
            match value {
                Some(v) => a.default_value(v),
                None => a,
            }
        });
        Self::parse_with(cmd, args)
    }
}

/// A clap error as a [`ConfigError`]: help, an unknown flag, a flag without its
/// value, or anything else clap refuses.
fn from_clap(e: clap::Error) -> ConfigError {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let arg = || match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            ConfigError::Help(help())
        }
        ErrorKind::UnknownArgument => match arg() {
            Some(a) => ConfigError::UnknownFlag(a),
            None => ConfigError::CommandLine(e.kind().to_string()),
        },
        ErrorKind::InvalidValue
            if matches!(
                e.get(ContextKind::InvalidValue),
                Some(ContextValue::String(v)) if v.is_empty()
            ) =>
        {
            // clap names the flag with its value name: `--listen <ADDR>`.
            let flag = arg().unwrap_or_default();
            let flag = flag.split(' ').next().unwrap_or_default().to_owned();
            ConfigError::MissingValue(flag)
        }
        _ => ConfigError::CommandLine(
            e.render()
                .to_string()
                .trim()
                .trim_start_matches("error: ")
                .to_owned(),
        ),
    }
}
