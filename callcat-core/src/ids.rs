//! Identifiers: calls, windows, owners, workers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::Error;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new time-ordered (UUIDv7) id.
            pub fn new() -> Self {
                $name(Uuid::now_v7())
            }

            /// Wraps an existing UUID.
            pub fn from_uuid(id: Uuid) -> Self {
                $name(id)
            }

            /// The UUID inside.
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                Uuid::parse_str(s)
                    .map($name)
                    .map_err(|e| Error::validation($what, format!("not a valid id: {e}")))
            }
        }
    };
}

uuid_id!(
    /// A call's id: a UUIDv7, so ids sort by creation time.
    CallId,
    "callId"
);
uuid_id!(
    /// A call window's id.
    WindowId,
    "windowId"
);

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a string.
            pub fn new(s: impl Into<String>) -> Self {
                $name(s.into())
            }

            /// The string inside.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s)
            }
        }
    };
}

string_id!(
    /// A tenant: a company, a branch, an organisation. Live views group by tenant.
    TenantId
);
string_id!(
    /// A user inside a tenant. Calls, transcripts and windows belong to a user.
    UserId
);
string_id!(
    /// A scheduler instance; leases name the worker that holds them.
    WorkerId
);

/// Who a call (or window, or transcript) belongs to.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Debug)]
pub struct Owner {
    /// The tenant (company/branch).
    pub tenant: TenantId,
    /// The user inside the tenant.
    pub user: UserId,
}

impl Owner {
    /// An owner from a tenant and a user.
    pub fn new(tenant: impl Into<TenantId>, user: impl Into<UserId>) -> Self {
        Owner {
            tenant: tenant.into(),
            user: user.into(),
        }
    }

    /// A stable single-string key (`tenant/user`, with `/` and `%` escaped), for
    /// stores that need one partition key per owner.
    pub fn key(&self) -> String {
        fn esc(s: &str) -> String {
            s.replace('%', "%25").replace('/', "%2F")
        }
        format!("{}/{}", esc(self.tenant.as_str()), esc(self.user.as_str()))
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_ids_are_time_ordered_and_parse_back() {
        let a = CallId::new();
        let b = CallId::new();
        assert!(a < b);
        assert_eq!(a.to_string().parse::<CallId>().expect("parses"), a);
        let err = "nope".parse::<CallId>().expect_err("rejected");
        assert_eq!(err.field(), Some("callId"));
    }

    #[test]
    fn owner_key_is_unambiguous() {
        assert_ne!(Owner::new("a/b", "c").key(), Owner::new("a", "b/c").key());
    }
}
