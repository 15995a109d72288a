//! [`DynamoStores`] and its builder: one client, the stores, table names, shards.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use callcat_core::{FieldCipher, Result, Stores};

use crate::calls::DynamoCallStore;
use crate::do_not_call::DynamoDoNotCallStore;
use crate::error::DynamoError;
use crate::transcripts::DynamoTranscriptStore;
use crate::windows::DynamoWindowStore;

/// The default calls table (seed 000).
pub const DEFAULT_CALLS_TABLE: &str = "callcat-calls";
/// The default transcripts table (seed 000).
pub const DEFAULT_TRANSCRIPTS_TABLE: &str = "callcat-transcripts";
/// The default call windows table.
pub const DEFAULT_WINDOWS_TABLE: &str = "callcat-windows";
/// The default do-not-call table.
pub const DEFAULT_DO_NOT_CALL_TABLE: &str = "callcat-do-not-call";
/// The default number of due/active/expiry index shards.
pub const DEFAULT_SHARDS: u32 = 8;
/// The largest shard count accepted.
pub const MAX_SHARDS: u32 = 256;

/// The table names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableNames {
    /// Calls (and their idempotency and provider-id guard items).
    pub calls: String,
    /// Transcripts (TTL on `expiresAt`).
    pub transcripts: String,
    /// Call windows.
    pub windows: String,
    /// Per-tenant do-not-call lists.
    pub do_not_call: String,
}

impl Default for TableNames {
    fn default() -> Self {
        TableNames {
            calls: DEFAULT_CALLS_TABLE.into(),
            transcripts: DEFAULT_TRANSCRIPTS_TABLE.into(),
            windows: DEFAULT_WINDOWS_TABLE.into(),
            do_not_call: DEFAULT_DO_NOT_CALL_TABLE.into(),
        }
    }
}

impl TableNames {
    /// The default names with `suffix` appended to each (e.g. per environment).
    pub fn with_suffix(suffix: &str) -> Self {
        let d = TableNames::default();
        TableNames {
            calls: format!("{}{suffix}", d.calls),
            transcripts: format!("{}{suffix}", d.transcripts),
            windows: format!("{}{suffix}", d.windows),
            do_not_call: format!("{}{suffix}", d.do_not_call),
        }
    }
}

fn validate_table_name(what: &'static str, name: &str) -> std::result::Result<(), DynamoError> {
    let ok = (3..=255).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(DynamoError::Validation {
            field: what,
            message: format!(
                "table name {name:?} must be 3 to 255 characters of A-Z, a-z, 0-9, '_', '-', '.'"
            ),
        })
    }
}

/// Builds [`DynamoStores`]: either from a client you configured yourself
/// ([`DynamoStoresBuilder::client`], e.g. from `aws-config` for IAM roles), or from
/// a region, static credentials and an optional endpoint (emulators, tests).
#[derive(Clone, Default)]
pub struct DynamoStoresBuilder {
    client: Option<Client>,
    region: Option<String>,
    endpoint_url: Option<String>,
    credentials: Option<Credentials>,
    tables: TableNames,
    shards: Option<u32>,
    operation_timeout: Option<Duration>,
    cipher: Option<FieldCipher>,
}

impl std::fmt::Debug for DynamoStoresBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoStoresBuilder")
            .field("client", &self.client.as_ref().map(|_| "<client>"))
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<redacted>"),
            )
            .field("tables", &self.tables)
            .field("shards", &self.shards)
            .field("operation_timeout", &self.operation_timeout)
            .field("cipher", &self.cipher)
            .finish()
    }
}

impl DynamoStoresBuilder {
    /// Uses a client you built (its region, credentials and endpoint are used as they are).
    pub fn client(mut self, client: Client) -> Self {
        self.client = Some(client);
        self
    }

    /// The AWS region (`us-east-1`, ...). Required unless a client is given.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Overrides the endpoint (`http://127.0.0.1:8000` for an emulator).
    pub fn endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.endpoint_url = Some(url.into());
        self
    }

    /// Static credentials. Required unless a client is given.
    pub fn credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
    ) -> Self {
        self.credentials = Some(Credentials::new(
            access_key_id,
            secret_access_key,
            session_token,
            None,
            "callcat-dynamo",
        ));
        self
    }

    /// All the table names.
    pub fn tables(mut self, tables: TableNames) -> Self {
        self.tables = tables;
        self
    }

    /// The calls table (default `callcat-calls`).
    pub fn calls_table(mut self, name: impl Into<String>) -> Self {
        self.tables.calls = name.into();
        self
    }

    /// The transcripts table (default `callcat-transcripts`).
    pub fn transcripts_table(mut self, name: impl Into<String>) -> Self {
        self.tables.transcripts = name.into();
        self
    }

    /// The call windows table (default `callcat-windows`).
    pub fn windows_table(mut self, name: impl Into<String>) -> Self {
        self.tables.windows = name.into();
        self
    }

    /// The do-not-call table (default `callcat-do-not-call`).
    pub fn do_not_call_table(mut self, name: impl Into<String>) -> Self {
        self.tables.do_not_call = name.into();
        self
    }

    /// How many partitions the due, active and expiry indexes are spread over
    /// (1 to 256, default 8). Raise it freely; never lower it on a table in use
    /// (items in the dropped shards would no longer be found until rewritten).
    pub fn shards(mut self, shards: u32) -> Self {
        self.shards = Some(shards);
        self
    }

    /// The time one operation (with the SDK's retries) may take; default 30 s.
    /// Ignored when a client is given.
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = Some(timeout);
        self
    }

    /// Encrypts calls (numbers, callee name, subject, prompt, variables, analysis,
    /// errors, recording URL), call window templates, transcript texts and
    /// do-not-call numbers at rest with `cipher`, and stores the phone
    /// numbers' blind indexes in `phoneIndex` (calls) and `numberKey` (do-not-call).
    /// See the crate docs ("Encryption at rest").
    pub fn cipher(mut self, cipher: FieldCipher) -> Self {
        self.cipher = Some(cipher);
        self
    }

    /// Validates the settings and builds the stores (no request is sent).
    pub fn build(self) -> Result<DynamoStores> {
        Ok(self.build_inner()?)
    }

    fn build_inner(self) -> std::result::Result<DynamoStores, DynamoError> {
        validate_table_name("callsTable", &self.tables.calls)?;
        validate_table_name("transcriptsTable", &self.tables.transcripts)?;
        validate_table_name("windowsTable", &self.tables.windows)?;
        validate_table_name("doNotCallTable", &self.tables.do_not_call)?;
        let t = &self.tables;
        let names = [&t.calls, &t.transcripts, &t.windows, &t.do_not_call];
        if names
            .iter()
            .enumerate()
            .any(|(i, a)| names[i + 1..].contains(a))
        {
            return Err(DynamoError::Validation {
                field: "tables",
                message: "the tables must have different names".into(),
            });
        }
        let shards = self.shards.unwrap_or(DEFAULT_SHARDS);
        if !(1..=MAX_SHARDS).contains(&shards) {
            return Err(DynamoError::Validation {
                field: "shards",
                message: format!("shards must be between 1 and {MAX_SHARDS}"),
            });
        }
        let client = match self.client {
            Some(c) => {
                if self.region.is_some()
                    || self.credentials.is_some()
                    || self.endpoint_url.is_some()
                {
                    return Err(DynamoError::Config(
                        "give either a client or region/credentials/endpoint, not both".into(),
                    ));
                }
                c
            }
            None => {
                let region = self
                    .region
                    .filter(|r| !r.trim().is_empty())
                    .ok_or_else(|| DynamoError::Validation {
                        field: "region",
                        message: "a region is required (or pass a client)".into(),
                    })?;
                let credentials = self.credentials.ok_or_else(|| DynamoError::Validation {
                    field: "credentials",
                    message: "credentials are required (or pass a client built with aws-config)"
                        .into(),
                })?;
                let mut cfg = aws_sdk_dynamodb::Config::builder()
                    .behavior_version(BehaviorVersion::latest())
                    .region(Region::new(region))
                    .credentials_provider(credentials)
                    .timeout_config(
                        TimeoutConfig::builder()
                            .connect_timeout(Duration::from_secs(5))
                            .operation_timeout(
                                self.operation_timeout.unwrap_or(Duration::from_secs(30)),
                            )
                            .build(),
                    );
                if let Some(url) = self.endpoint_url {
                    let parsed = url::Url::parse(&url).map_err(|e| DynamoError::Validation {
                        field: "endpointUrl",
                        message: format!("endpoint URL {url:?} is not valid: {e}"),
                    })?;
                    if !matches!(parsed.scheme(), "http" | "https") {
                        return Err(DynamoError::Validation {
                            field: "endpointUrl",
                            message: "endpoint URL must be http or https".into(),
                        });
                    }
                    cfg = cfg.endpoint_url(url);
                }
                Client::from_conf(cfg.build())
            }
        };
        let mut calls = DynamoCallStore::new(client.clone(), &self.tables.calls, shards);
        let mut transcripts =
            DynamoTranscriptStore::new(client.clone(), &self.tables.transcripts, shards);
        let mut do_not_call = DynamoDoNotCallStore::new(client.clone(), &self.tables.do_not_call);
        let mut windows = DynamoWindowStore::new(client.clone(), &self.tables.windows, shards);
        if let Some(c) = self.cipher {
            calls = calls.with_cipher(c.clone());
            transcripts = transcripts.with_cipher(c.clone());
            windows = windows.with_cipher(c.clone());
            do_not_call = do_not_call.with_cipher(c);
        }
        Ok(DynamoStores {
            calls: Arc::new(calls),
            transcripts: Arc::new(transcripts),
            windows: Arc::new(windows),
            do_not_call: Arc::new(do_not_call),
            client,
            tables: self.tables,
            shards,
        })
    }
}

/// The DynamoDB stores sharing one client.
#[derive(Clone)]
pub struct DynamoStores {
    /// Calls.
    pub calls: Arc<DynamoCallStore>,
    /// Transcripts.
    pub transcripts: Arc<DynamoTranscriptStore>,
    /// Call windows.
    pub windows: Arc<DynamoWindowStore>,
    /// Per-tenant do-not-call lists.
    pub do_not_call: Arc<DynamoDoNotCallStore>,
    client: Client,
    tables: TableNames,
    shards: u32,
}

impl std::fmt::Debug for DynamoStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoStores")
            .field("tables", &self.tables)
            .field("shards", &self.shards)
            .finish_non_exhaustive()
    }
}

impl DynamoStores {
    /// A builder.
    pub fn builder() -> DynamoStoresBuilder {
        DynamoStoresBuilder::default()
    }

    /// The stores as core trait objects.
    pub fn stores(&self) -> Stores {
        Stores {
            calls: self.calls.clone(),
            transcripts: self.transcripts.clone(),
            windows: self.windows.clone(),
            do_not_call: self.do_not_call.clone(),
        }
    }

    /// The client the stores use.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The table names.
    pub fn tables(&self) -> &TableNames {
        &self.tables
    }

    /// The shard count.
    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// Creates the four tables with their indexes (on-demand billing) and turns on
    /// the transcripts' TTL, then waits until they are active. For development and
    /// tests; production tables are usually deployed from the JSON definitions in
    /// the crate documentation.
    pub async fn create_tables(&self) -> Result<()> {
        Ok(crate::tables::create_all(&self.client, &self.tables).await?)
    }

    /// Deletes the four tables (missing ones are skipped). For tests.
    pub async fn delete_tables(&self) -> Result<()> {
        Ok(crate::tables::delete_all(&self.client, &self.tables).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callcat_core::ErrorKind;

    fn base() -> DynamoStoresBuilder {
        DynamoStores::builder()
            .region("us-east-1")
            .credentials("AKID", "very-secret", None)
    }

    #[test]
    fn build_validates_settings() {
        assert!(base().build().is_ok());
        let cases = [
            (
                DynamoStores::builder().credentials("a", "b", None),
                "region",
            ),
            (DynamoStores::builder().region("us-east-1"), "credentials"),
            (base().shards(0), "shards"),
            (base().shards(MAX_SHARDS + 1), "shards"),
            (base().calls_table("x"), "callsTable"),
            (base().windows_table("bad name!"), "windowsTable"),
            (base().endpoint_url("not a url"), "endpointUrl"),
            (base().endpoint_url("ftp://127.0.0.1"), "endpointUrl"),
            (base().transcripts_table(DEFAULT_CALLS_TABLE), "tables"),
            (base().do_not_call_table("a b"), "doNotCallTable"),
            (base().do_not_call_table(DEFAULT_WINDOWS_TABLE), "tables"),
        ];
        for (builder, field) in cases {
            let err = builder.build().expect_err(field);
            assert_eq!(err.kind(), ErrorKind::Validation, "{field}");
            assert_eq!(err.field(), Some(field));
            assert_eq!(err.source_name(), Some("dynamo"));
        }
    }

    #[test]
    fn debug_hides_credentials() {
        let shown = format!("{:?}", base());
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(!shown.contains("AKID"), "{shown}");
    }
}
