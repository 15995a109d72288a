//! One-off administration commands, run instead of the server: `--rekey`
//! re-encrypts the stored rows still under an old master key
//! ([`callcat_core::rotation::rekey`]) and `--key-report` only counts the rows
//! under each key ([`callcat_core::rotation::key_report`]). Both print the
//! report, which says when an old key can be removed from `CALLCAT_MASTER_KEY`.

use callcat_core::Wakeup;
use callcat_core::rotation::{RekeyReport, key_report, rekey};

use crate::app::{StartError, open_stores};
use crate::config::{AdminCommand, Config, ConfigError};

/// Rows read (and re-sealed) per request.
pub const BATCH: u32 = 500;

/// Runs `command` against the configured store with the configured key ring.
pub async fn run(config: &Config, command: AdminCommand) -> Result<RekeyReport, StartError> {
    let keys = config.master_key.as_ref().ok_or(ConfigError::Missing {
        setting: "CALLCAT_MASTER_KEY",
        when: Some("--rekey or --key-report is given"),
    })?;
    let cipher = keys.cipher()?;
    // The wake-up listener (PostgreSQL) is dropped with this function.
    let (stores, _listener) = open_stores(config, &Wakeup::new()).await?;
    Ok(match command {
        AdminCommand::Rekey => rekey(&stores, &cipher, BATCH).await?,
        AdminCommand::KeyReport => key_report(&stores, &cipher, BATCH).await?,
    })
}
