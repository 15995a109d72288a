//! Parsing, precedence, bounds, help and redaction of the settings.

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
    assert!(matches!(
        Config::from_env_and_args(["-h".to_owned()]),
        Err(ConfigError::Help(h)) if h == usage()
    ));
    assert!(matches!(cfg(&[], &["stray"]), Err(ConfigError::UnknownFlag(a)) if a == "stray"));
}

#[test]
fn every_setting_has_its_flag_and_its_variable() {
    // (flag, variable): the names the README, docs/http-api.md and deployments use.
    let settings = [
        ("--listen", "CALLCAT_LISTEN"),
        ("--public-url", "CALLCAT_PUBLIC_URL"),
        ("--jwt-secret", "CALLCAT_JWT_SECRET"),
        ("--master-key", "CALLCAT_MASTER_KEY"),
        ("--metrics-tenant-labels", "CALLCAT_METRICS_TENANT_LABELS"),
        ("--metrics-token", "CALLCAT_METRICS_TOKEN"),
        ("--caller-numbers", "CALLCAT_CALLER_NUMBERS"),
        ("--jwt-issuer", "CALLCAT_JWT_ISSUER"),
        ("--jwt-audience", "CALLCAT_JWT_AUDIENCE"),
        (
            "--jwt-max-lifetime-seconds",
            "CALLCAT_JWT_MAX_LIFETIME_SECONDS",
        ),
        (
            "--request-timeout-seconds",
            "CALLCAT_REQUEST_TIMEOUT_SECONDS",
        ),
        (
            "--max-concurrent-requests",
            "CALLCAT_MAX_CONCURRENT_REQUESTS",
        ),
        (
            "--header-read-timeout-seconds",
            "CALLCAT_HEADER_READ_TIMEOUT_SECONDS",
        ),
        (
            "--webhook-body-limit-bytes",
            "CALLCAT_WEBHOOK_BODY_LIMIT_BYTES",
        ),
        (
            "--max-concurrent-webhooks",
            "CALLCAT_MAX_CONCURRENT_WEBHOOKS",
        ),
        ("--trusted-proxy-header", "CALLCAT_TRUSTED_PROXY_HEADER"),
        ("--one-open-call-per-user", "CALLCAT_ONE_OPEN_CALL_PER_USER"),
        ("--global-cap", "CALLCAT_GLOBAL_CAP"),
        ("--owner-cap", "CALLCAT_OWNER_CAP"),
        ("--max-attempts", "CALLCAT_MAX_ATTEMPTS"),
        ("--drain-seconds", "CALLCAT_DRAIN_SECONDS"),
        ("--store", "CALLCAT_STORE"),
        ("--database-url", "DATABASE_URL"),
        ("--postgres-schema", "CALLCAT_POSTGRES_SCHEMA"),
        ("--dynamo-endpoint", "CALLCAT_DYNAMO_ENDPOINT"),
        ("--dynamo-calls-table", "CALLCAT_DYNAMO_CALLS_TABLE"),
        (
            "--dynamo-transcripts-table",
            "CALLCAT_DYNAMO_TRANSCRIPTS_TABLE",
        ),
        ("--dynamo-windows-table", "CALLCAT_DYNAMO_WINDOWS_TABLE"),
        (
            "--dynamo-do-not-call-table",
            "CALLCAT_DYNAMO_DO_NOT_CALL_TABLE",
        ),
        ("--dynamo-create-tables", "CALLCAT_DYNAMO_CREATE_TABLES"),
        ("--aws-region", "AWS_REGION"),
        ("--aws-access-key-id", "AWS_ACCESS_KEY_ID"),
        ("--aws-secret-access-key", "AWS_SECRET_ACCESS_KEY"),
        ("--aws-session-token", "AWS_SESSION_TOKEN"),
        ("--telephony", "CALLCAT_TELEPHONY"),
        ("--retell-api-key", "RETELL_API_KEY"),
        ("--retell-base-url", "RETELL_BASE_URL"),
        ("--retell-from-number", "RETELL_FROM_NUMBER"),
        ("--retell-agent-id", "RETELL_AGENT_ID"),
        ("--twilio-account-sid", "TWILIO_ACCOUNT_SID"),
        ("--twilio-auth-token", "TWILIO_AUTH_TOKEN"),
        ("--twilio-from-number", "TWILIO_FROM_NUMBER"),
        ("--twilio-base-url", "TWILIO_BASE_URL"),
    ];
    let Err(ConfigError::Help(help)) = cfg(&[], &["--help"]) else {
        panic!("--help gives the help text");
    };
    assert_eq!(help, usage());
    for (flag, var) in settings {
        // The setting's entry: its flag, value name, what it is and its variable
        // (on one line, or two when clap moves the text under a long flag).
        let start = help
            .find(&format!("      {flag} <"))
            .unwrap_or_else(|| panic!("{flag} is not in the help:\n{help}"));
        let entry = &help[start + 6..];
        let end = entry.find("\n      --").unwrap_or(entry.len());
        let entry = &entry[..end.min(entry.find("\n\n").unwrap_or(end))];
        assert!(entry.contains(&format!("[env: {var}]")), "{entry}");
    }
    // Every flag of the command is one of the above: nothing undocumented here.
    // The administration commands are not settings: they have no variable, so
    // an environment can never turn a server into a re-encryption run.
    let flags = args::command()
        .get_arguments()
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .filter(|f| !["--help", "--rekey", "--key-report"].contains(&f.as_str()))
        .collect::<Vec<_>>();
    assert_eq!(flags.len(), settings.len(), "{flags:?}");
    for f in &flags {
        assert!(
            settings.iter().any(|(s, _)| s == f),
            "{f} is not listed here"
        );
    }
    // The variable reaches the setting of its flag (a typo in one `env = ...`
    // would leave a setting unreachable).
    for (flag, var) in settings {
        let from_env =
            args::Args::from_sources(|k| (k == var).then(|| "v".to_owned()), std::iter::empty())
                .unwrap();
        let from_flag =
            args::Args::from_sources(|_| None, [flag.to_owned(), "v".to_owned()]).unwrap();
        assert_eq!(
            format!("{from_env:?}"),
            format!("{from_flag:?}"),
            "{flag} / {var}"
        );
        assert_ne!(
            format!("{from_env:?}"),
            format!("{:?}", args::Args::default()),
            "{var}"
        );
    }
}

#[test]
fn help_never_shows_a_value_from_the_environment() {
    // The process environment is not touched here (that needs unsafe code); the
    // command sets every argument to hide its variable's value, so the help shows
    // `[env: NAME]` and never `[env: NAME=value]`.
    for a in args::command().get_arguments() {
        if a.get_env().is_some() {
            assert!(a.is_hide_env_values_set(), "{:?}", a.get_id());
        }
    }
    let help = usage();
    for a in args::command().get_arguments() {
        if let Some(var) = a.get_env().and_then(|v| v.to_str()) {
            assert!(!help.contains(&format!("[env: {var}=")), "{help}");
        }
    }
}

#[test]
fn dispatch_limits_default_parse_and_are_bounded() {
    let d = cfg(&[], &[]).unwrap().dispatch;
    assert_eq!(
        d,
        DispatchConfig {
            global_cap: 20,
            owner_cap: Some(1),
            max_attempts: 3,
            drain: Duration::from_secs(10),
        }
    );
    assert_eq!(
        d.max_attempts,
        callcat_core::RetryPolicy::default().max_attempts
    );

    let d = cfg(
        &[
            ("CALLCAT_GLOBAL_CAP", "7"),
            ("CALLCAT_OWNER_CAP", "5"),
            ("CALLCAT_MAX_ATTEMPTS", "9"),
            ("CALLCAT_DRAIN_SECONDS", "30"),
        ],
        &[
            "--global-cap",
            "100",
            "--owner-cap=0",
            "--drain-seconds",
            "0",
        ],
    )
    .unwrap()
    .dispatch;
    assert_eq!(d.global_cap, 100, "the flag wins");
    assert_eq!(d.owner_cap, None, "0 is no per-owner cap");
    assert_eq!(d.max_attempts, 9, "the variable applies without a flag");
    assert_eq!(d.drain, Duration::ZERO);

    let edges: &[(&str, &str, bool)] = &[
        ("CALLCAT_GLOBAL_CAP", "0", false),
        ("CALLCAT_GLOBAL_CAP", "1", true),
        ("CALLCAT_GLOBAL_CAP", "10000", true),
        ("CALLCAT_GLOBAL_CAP", "10001", false),
        ("CALLCAT_GLOBAL_CAP", "-1", false),
        ("CALLCAT_GLOBAL_CAP", "lots", false),
        ("CALLCAT_OWNER_CAP", "10000", true),
        ("CALLCAT_OWNER_CAP", "10001", false),
        ("CALLCAT_MAX_ATTEMPTS", "0", false),
        ("CALLCAT_MAX_ATTEMPTS", "20", true),
        ("CALLCAT_MAX_ATTEMPTS", "21", false),
        ("CALLCAT_DRAIN_SECONDS", "300", true),
        ("CALLCAT_DRAIN_SECONDS", "301", false),
        ("CALLCAT_DRAIN_SECONDS", "1.5", false),
        ("CALLCAT_METRICS_TENANT_LABELS", "1", true),
        ("CALLCAT_METRICS_TENANT_LABELS", "yes", false),
    ];
    for (var, value, ok) in edges {
        match cfg(&[(var, value)], &[]) {
            Ok(_) if *ok => {}
            Err(e) if !ok => {
                assert_eq!(e.setting(), Some(*var), "{var}={value}: {e}");
                assert!(e.to_string().starts_with(var), "{e}");
            }
            other => panic!("{var}={value}: {other:?}"),
        }
    }
    // The bound names the setting when it comes from a flag too.
    let e = cfg(&[], &["--max-attempts", "50"]).unwrap_err();
    assert_eq!(e.setting(), Some("CALLCAT_MAX_ATTEMPTS"));
    assert!(e.to_string().contains("1..=20"), "{e}");
    assert!(
        cfg(&[("CALLCAT_METRICS_TENANT_LABELS", "1")], &[])
            .unwrap()
            .metrics_tenant_labels
    );
}

const SECRET: &str = "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t";

#[test]
fn http_and_token_settings_default_parse_and_are_bounded() {
    let c = cfg(&[], &[]).unwrap();
    assert_eq!(c.http, HttpConfig::default());
    assert_eq!(c.http.request_timeout, Duration::from_secs(30));
    assert_eq!(c.http.max_concurrent_requests, 256);
    assert_eq!(c.http.header_read_timeout, Duration::from_secs(10));
    assert_eq!(c.http.webhook_body_limit, 256 * 1024);
    assert_eq!(c.http.max_concurrent_webhooks, 64);
    assert_eq!(c.jwt.max_lifetime, Duration::from_secs(30 * 24 * 3600));
    assert_eq!(c.metrics_token, None);
    let c = cfg(
        &[
            ("CALLCAT_REQUEST_TIMEOUT_SECONDS", "5"),
            ("CALLCAT_MAX_CONCURRENT_REQUESTS", "10"),
            ("CALLCAT_HEADER_READ_TIMEOUT_SECONDS", "3"),
            ("CALLCAT_WEBHOOK_BODY_LIMIT_BYTES", "2048"),
            ("CALLCAT_MAX_CONCURRENT_WEBHOOKS", "4"),
            ("CALLCAT_TRUSTED_PROXY_HEADER", "X-Forwarded-For"),
            ("CALLCAT_JWT_ISSUER", "https://idp.example.com"),
            ("CALLCAT_JWT_AUDIENCE", "callcat"),
            ("CALLCAT_JWT_MAX_LIFETIME_SECONDS", "3600"),
            ("CALLCAT_METRICS_TOKEN", "scrape-token-0123456789"),
        ],
        &["--request-timeout-seconds", "7"],
    )
    .unwrap();
    assert_eq!(
        c.http.request_timeout,
        Duration::from_secs(7),
        "the flag wins"
    );
    assert_eq!(c.http.max_concurrent_requests, 10);
    assert_eq!(c.http.header_read_timeout, Duration::from_secs(3));
    assert_eq!(c.http.webhook_body_limit, 2048);
    assert_eq!(c.http.max_concurrent_webhooks, 4);
    assert_eq!(
        c.http.trusted_proxy_header.as_deref(),
        Some("x-forwarded-for")
    );
    assert_eq!(c.jwt.issuer.as_deref(), Some("https://idp.example.com"));
    assert_eq!(c.jwt.audience.as_deref(), Some("callcat"));
    assert_eq!(c.jwt.max_lifetime, Duration::from_secs(3600));
    assert!(
        !format!("{c:?}").contains("scrape-token"),
        "the token is a secret"
    );
    let edges: &[(&str, &str, bool)] = &[
        ("CALLCAT_REQUEST_TIMEOUT_SECONDS", "0", false),
        ("CALLCAT_REQUEST_TIMEOUT_SECONDS", "3600", true),
        ("CALLCAT_REQUEST_TIMEOUT_SECONDS", "3601", false),
        ("CALLCAT_MAX_CONCURRENT_REQUESTS", "0", false),
        ("CALLCAT_MAX_CONCURRENT_REQUESTS", "100000", true),
        ("CALLCAT_MAX_CONCURRENT_REQUESTS", "100001", false),
        ("CALLCAT_HEADER_READ_TIMEOUT_SECONDS", "0", false),
        ("CALLCAT_HEADER_READ_TIMEOUT_SECONDS", "301", false),
        ("CALLCAT_WEBHOOK_BODY_LIMIT_BYTES", "1023", false),
        ("CALLCAT_WEBHOOK_BODY_LIMIT_BYTES", "16777216", true),
        ("CALLCAT_WEBHOOK_BODY_LIMIT_BYTES", "16777217", false),
        ("CALLCAT_MAX_CONCURRENT_WEBHOOKS", "0", false),
        ("CALLCAT_MAX_CONCURRENT_WEBHOOKS", "10001", false),
        ("CALLCAT_TRUSTED_PROXY_HEADER", "not a header", false),
        ("CALLCAT_JWT_MAX_LIFETIME_SECONDS", "59", false),
        ("CALLCAT_JWT_MAX_LIFETIME_SECONDS", "31536000", true),
        ("CALLCAT_JWT_MAX_LIFETIME_SECONDS", "31536001", false),
        ("CALLCAT_METRICS_TOKEN", "short", false),
    ];
    for (var, value, ok) in edges {
        match cfg(&[(var, value)], &[]) {
            Ok(_) if *ok => {}
            Err(e) if !ok => assert_eq!(e.setting(), Some(*var), "{var}={value}: {e}"),
            other => panic!("{var}={value}: {other:?}"),
        }
    }
}

#[test]
fn without_a_jwt_secret_only_loopback_addresses_are_served() {
    for addr in ["0.0.0.0:8080", "192.0.2.10:8080", "[::]:8080"] {
        let e = cfg(&[("CALLCAT_LISTEN", addr)], &[]).unwrap_err();
        assert_eq!(e.setting(), Some("CALLCAT_JWT_SECRET"), "{addr}: {e}");
        assert!(e.to_string().contains("loopback"), "{e}");
        assert!(
            cfg(
                &[("CALLCAT_LISTEN", addr), ("CALLCAT_JWT_SECRET", SECRET)],
                &[]
            )
            .is_ok()
        );
    }
    assert!(cfg(&[("CALLCAT_LISTEN", "[::1]:8080")], &[]).is_ok());
    assert!(cfg(&[("CALLCAT_LISTEN", "127.0.0.1:8080")], &[]).is_ok());
    // A Config built in code is checked too.
    let c = Config {
        listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
        ..Config::default()
    };
    assert_eq!(c.check().unwrap_err().setting(), Some("CALLCAT_JWT_SECRET"));
}

#[test]
fn blank_values_are_unset_and_the_last_flag_wins() {
    let c = cfg(&[("CALLCAT_LISTEN", "  "), ("CALLCAT_STORE", "")], &[]).unwrap();
    assert_eq!(c, Config::default());
    let c = cfg(&[], &["--global-cap", "5", "--global-cap", "6"]).unwrap();
    assert_eq!(c.dispatch.global_cap, 6);
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

#[test]
fn caller_numbers_parse_from_the_setting_and_the_flag() {
    assert_eq!(cfg(&[], &[]).unwrap().caller_numbers, None);
    let c = cfg(&[("CALLCAT_CALLER_NUMBERS", "acme=+14155550100")], &[]).unwrap();
    assert_eq!(c.caller_numbers.map(|c| c.tenants.len()), Some(1));
    let c = cfg(&[], &["--caller-numbers", "a=+14155550100;b=+14155550200"]).unwrap();
    assert_eq!(c.caller_numbers.map(|c| c.tenants.len()), Some(2));
    let e = cfg(&[("CALLCAT_CALLER_NUMBERS", "acme=+1415oops")], &[]).unwrap_err();
    assert_eq!(e.setting(), Some("CALLCAT_CALLER_NUMBERS"));
}

#[test]
fn rekey_and_key_report_are_admin_commands_that_need_the_master_key() {
    assert_eq!(cfg(&[], &[]).unwrap().admin, None);
    let e = cfg(&[], &["--rekey"]).unwrap_err();
    assert_eq!(e.setting(), Some("CALLCAT_MASTER_KEY"));
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let env = [("CALLCAT_MASTER_KEY", key.as_str())];
    assert_eq!(
        cfg(&env, &["--rekey"]).unwrap().admin,
        Some(AdminCommand::Rekey)
    );
    assert_eq!(
        cfg(&env, &["--key-report"]).unwrap().admin,
        Some(AdminCommand::KeyReport)
    );
    assert!(usage().contains("--rekey") && usage().contains("--key-report"));
}

#[test]
fn dynamo_table_names_default_and_each_can_be_set() {
    let creds = [
        ("CALLCAT_STORE", "dynamo"),
        ("AWS_ACCESS_KEY_ID", "id"),
        ("AWS_SECRET_ACCESS_KEY", "secret"),
    ];
    let StoreConfig::Dynamo(d) = cfg(&creds, &[]).unwrap().store else {
        panic!("a DynamoDB store");
    };
    assert_eq!(
        (
            d.calls_table.as_str(),
            d.transcripts_table.as_str(),
            d.windows_table.as_str(),
            d.do_not_call_table.as_str()
        ),
        (
            "callcat-calls",
            "callcat-transcripts",
            "callcat-windows",
            "callcat-do-not-call"
        )
    );
    let mut env = creds.to_vec();
    env.push(("CALLCAT_DYNAMO_DO_NOT_CALL_TABLE", "acme-dnc"));
    let StoreConfig::Dynamo(d) = cfg(&env, &["--dynamo-windows-table", "acme-windows"])
        .unwrap()
        .store
    else {
        panic!("a DynamoDB store");
    };
    assert_eq!(d.do_not_call_table, "acme-dnc");
    assert_eq!(d.windows_table, "acme-windows");
}
