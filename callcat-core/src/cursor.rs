//! An opaque page cursor shared by backends that page by (sort key, id).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where a page ended: the last item's sort key and id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The last item's sort key (epoch milliseconds, or any integer order).
    pub key: i64,
    /// The last item's id, to break ties.
    pub id: String,
}

impl Cursor {
    /// Encodes as an opaque URL-safe string.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(json)
    }

    /// Decodes a string made by [`Cursor::encode`]; anything else is a `Validation`
    /// error on the field `nextToken`.
    pub fn decode(s: &str) -> Result<Self> {
        URL_SAFE_NO_PAD
            .decode(s.as_bytes())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| Error::validation("nextToken", "the page token is not valid"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let c = Cursor {
            key: -5,
            id: "abc".into(),
        };
        assert_eq!(Cursor::decode(&c.encode()).expect("decodes"), c);
        assert_eq!(
            Cursor::decode("%%%").expect_err("garbage").field(),
            Some("nextToken")
        );
    }
}
