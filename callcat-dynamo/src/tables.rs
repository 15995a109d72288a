//! Table definitions (the JSON files in `tables/`, deployable with
//! `aws dynamodb create-table --cli-input-json`) and helpers that create and delete them.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::client::Waiters;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
    LocalSecondaryIndex, Projection, ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use serde::Deserialize;

use crate::config::TableNames;
use crate::error::{DResult, DynamoError};

/// The calls table, as `aws dynamodb create-table --cli-input-json` takes it.
pub const CALLS_TABLE_JSON: &str = include_str!("../tables/calls.json");
/// The transcripts table (then turn on TTL on `expiresAt`).
pub const TRANSCRIPTS_TABLE_JSON: &str = include_str!("../tables/transcripts.json");
/// The call windows table.
pub const WINDOWS_TABLE_JSON: &str = include_str!("../tables/windows.json");
/// The do-not-call table (with its local secondary index `added`).
pub const DO_NOT_CALL_TABLE_JSON: &str = include_str!("../tables/do-not-call.json");

/// The TTL attribute of the transcripts table (epoch seconds).
pub const TRANSCRIPT_TTL_ATTRIBUTE: &str = "expiresAt";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TableDef {
    // The helpers take names from `TableNames`; tests check the deployable default.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) table_name: String,
    billing_mode: String,
    attribute_definitions: Vec<AttrDef>,
    key_schema: Vec<KeyDef>,
    #[serde(default)]
    pub(crate) global_secondary_indexes: Vec<IndexDef>,
    #[serde(default)]
    pub(crate) local_secondary_indexes: Vec<IndexDef>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AttrDef {
    attribute_name: String,
    attribute_type: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyDef {
    attribute_name: String,
    key_type: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct IndexDef {
    pub(crate) index_name: String,
    key_schema: Vec<KeyDef>,
    projection: ProjectionDef,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ProjectionDef {
    projection_type: String,
    #[serde(default)]
    non_key_attributes: Vec<String>,
}

pub(crate) fn parse(json: &str) -> DResult<TableDef> {
    serde_json::from_str(json)
        .map_err(|e| DynamoError::Corrupt(format!("table definition does not parse: {e}")))
}

fn built<T>(r: Result<T, aws_sdk_dynamodb::error::BuildError>) -> DResult<T> {
    r.map_err(|e| DynamoError::Corrupt(format!("table definition is incomplete: {e}")))
}

fn key_schema(keys: &[KeyDef]) -> DResult<Vec<KeySchemaElement>> {
    keys.iter()
        .map(|k| {
            built(
                KeySchemaElement::builder()
                    .attribute_name(&k.attribute_name)
                    .key_type(KeyType::from(k.key_type.as_str()))
                    .build(),
            )
        })
        .collect()
}

fn projection(i: &IndexDef) -> Projection {
    let mut projection = Projection::builder()
        .projection_type(ProjectionType::from(i.projection.projection_type.as_str()));
    for a in &i.projection.non_key_attributes {
        projection = projection.non_key_attributes(a);
    }
    projection.build()
}

/// Creates one table from its JSON definition under `name`; an existing table is left as it is.
async fn create_one(client: &Client, json: &str, name: &str) -> DResult<()> {
    let def = parse(json)?;
    let attrs = def
        .attribute_definitions
        .iter()
        .map(|a| {
            built(
                AttributeDefinition::builder()
                    .attribute_name(&a.attribute_name)
                    .attribute_type(ScalarAttributeType::from(a.attribute_type.as_str()))
                    .build(),
            )
        })
        .collect::<DResult<Vec<_>>>()?;
    let indexes = def
        .global_secondary_indexes
        .iter()
        .map(|i| {
            built(
                GlobalSecondaryIndex::builder()
                    .index_name(&i.index_name)
                    .set_key_schema(Some(key_schema(&i.key_schema)?))
                    .projection(projection(i))
                    .build(),
            )
        })
        .collect::<DResult<Vec<_>>>()?;
    let local_indexes = def
        .local_secondary_indexes
        .iter()
        .map(|i| {
            built(
                LocalSecondaryIndex::builder()
                    .index_name(&i.index_name)
                    .set_key_schema(Some(key_schema(&i.key_schema)?))
                    .projection(projection(i))
                    .build(),
            )
        })
        .collect::<DResult<Vec<_>>>()?;
    let result = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::from(def.billing_mode.as_str()))
        .set_attribute_definitions(Some(attrs))
        .set_key_schema(Some(key_schema(&def.key_schema)?))
        .set_global_secondary_indexes((!indexes.is_empty()).then_some(indexes))
        .set_local_secondary_indexes((!local_indexes.is_empty()).then_some(local_indexes))
        .send()
        .await;
    match result {
        Ok(_) => {}
        Err(e) if e.code() == Some("ResourceInUseException") => {}
        Err(e) => return Err(DynamoError::sdk("CreateTable", e)),
    }
    client
        .wait_until_table_exists()
        .table_name(name)
        .wait(Duration::from_secs(120))
        .await
        .map_err(|e| DynamoError::Unavailable {
            op: "DescribeTable",
            message: format!("table {name} did not become active: {e}"),
            source: None,
        })?;
    Ok(())
}

pub(crate) async fn create_all(client: &Client, tables: &TableNames) -> DResult<()> {
    create_calls(client, &tables.calls).await?;
    create_transcripts(client, &tables.transcripts).await?;
    create_windows(client, &tables.windows).await?;
    create_do_not_call(client, &tables.do_not_call).await
}

pub(crate) async fn create_calls(client: &Client, name: &str) -> DResult<()> {
    create_one(client, CALLS_TABLE_JSON, name).await
}

pub(crate) async fn create_windows(client: &Client, name: &str) -> DResult<()> {
    create_one(client, WINDOWS_TABLE_JSON, name).await
}

pub(crate) async fn create_do_not_call(client: &Client, name: &str) -> DResult<()> {
    create_one(client, DO_NOT_CALL_TABLE_JSON, name).await
}

/// Creates the transcripts table and turns on its TTL.
pub(crate) async fn create_transcripts(client: &Client, name: &str) -> DResult<()> {
    create_one(client, TRANSCRIPTS_TABLE_JSON, name).await?;
    let ttl = built(
        TimeToLiveSpecification::builder()
            .enabled(true)
            .attribute_name(TRANSCRIPT_TTL_ATTRIBUTE)
            .build(),
    )?;
    match client
        .update_time_to_live()
        .table_name(name)
        .time_to_live_specification(ttl)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        // Already enabled.
        Err(e)
            if e.code() == Some("ValidationException")
                && e.message().is_some_and(|m| m.contains("already enabled")) =>
        {
            Ok(())
        }
        Err(e) => Err(DynamoError::sdk("UpdateTimeToLive", e)),
    }
}

pub(crate) async fn delete_all(client: &Client, tables: &TableNames) -> DResult<()> {
    for name in [
        &tables.calls,
        &tables.transcripts,
        &tables.windows,
        &tables.do_not_call,
    ] {
        delete_one(client, name).await?;
    }
    Ok(())
}

/// Deletes a table; a missing one is not an error.
pub(crate) async fn delete_one(client: &Client, name: &str) -> DResult<()> {
    match client.delete_table().table_name(name).send().await {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("ResourceNotFoundException") => Ok(()),
        Err(e) => Err(DynamoError::sdk("DeleteTable", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::item::{attr, index};

    #[test]
    fn definitions_parse_and_name_the_default_tables() {
        assert_eq!(
            parse(CALLS_TABLE_JSON).expect("calls").table_name,
            "callcat-calls"
        );
        assert_eq!(
            parse(TRANSCRIPTS_TABLE_JSON)
                .expect("transcripts")
                .table_name,
            "callcat-transcripts"
        );
        assert_eq!(
            parse(WINDOWS_TABLE_JSON).expect("windows").table_name,
            "callcat-windows"
        );
        assert_eq!(
            parse(DO_NOT_CALL_TABLE_JSON)
                .expect("do-not-call")
                .table_name,
            crate::config::DEFAULT_DO_NOT_CALL_TABLE
        );
    }

    #[test]
    fn do_not_call_definition_has_the_index_and_keys_the_code_uses() {
        use crate::do_not_call::{ADDED_INDEX, attr};
        let def = parse(DO_NOT_CALL_TABLE_JSON).expect("do-not-call");
        assert!(def.global_secondary_indexes.is_empty());
        let names: Vec<&str> = def
            .local_secondary_indexes
            .iter()
            .map(|i| i.index_name.as_str())
            .collect();
        assert_eq!(names, [ADDED_INDEX]);
        for a in [attr::TENANT, attr::NUMBER_KEY, attr::ADDED_SORT] {
            assert!(
                DO_NOT_CALL_TABLE_JSON.contains(&format!("\"{a}\"")),
                "{a} missing"
            );
        }
    }

    #[test]
    fn calls_definition_has_every_index_the_code_queries() {
        let def = parse(CALLS_TABLE_JSON).expect("calls");
        let names: Vec<&str> = def
            .global_secondary_indexes
            .iter()
            .map(|i| i.index_name.as_str())
            .collect();
        for i in [
            index::OWNER_VIEW,
            index::TENANT_SCHEDULE,
            index::PROVIDER,
            index::ACTIVE_TENANT,
            index::ACTIVE_SHARD,
            index::DUE,
        ] {
            assert!(names.contains(&i), "{i} missing");
        }
        for a in [attr::PK, attr::DUE_AT, attr::DUE_SHARD, attr::VIEW_SORT] {
            assert!(
                CALLS_TABLE_JSON.contains(&format!("\"{a}\"")),
                "{a} missing"
            );
        }
    }

    #[test]
    fn readme_shows_the_definitions_verbatim() {
        let readme = include_str!("../README.md");
        for json in [
            CALLS_TABLE_JSON,
            TRANSCRIPTS_TABLE_JSON,
            WINDOWS_TABLE_JSON,
            DO_NOT_CALL_TABLE_JSON,
        ] {
            assert!(
                readme.contains(json.trim()),
                "README is out of date with a table definition in tables/"
            );
        }
    }
}
