//! `CALLCAT_CALLER_NUMBERS`: the caller numbers each tenant may give, e.g.
//! `acme=+14155550100|+14155550101;beta=+14155550200`.

use std::collections::{BTreeMap, BTreeSet};

use callcat_core::{CallerNumbers, PhoneNumber};

use super::{ConfigError, invalid};

const SETTING: &str = "CALLCAT_CALLER_NUMBERS";

/// The most tenants the setting may list.
pub const MAX_TENANTS: usize = 1000;
/// The most numbers one tenant may be given.
pub const MAX_NUMBERS_PER_TENANT: usize = 100;
/// The longest tenant name, in bytes.
pub const MAX_TENANT_LEN: usize = 128;

/// The caller numbers each tenant may give (`CALLCAT_CALLER_NUMBERS`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallerNumbersConfig {
    /// Tenant name → its numbers.
    pub tenants: BTreeMap<String, BTreeSet<PhoneNumber>>,
}

impl CallerNumbersConfig {
    /// Parses `tenant=+number|+number;tenant=+number`; every tenant name and
    /// every number is checked, and the error names `CALLCAT_CALLER_NUMBERS`.
    pub fn parse(v: &str) -> Result<Self, ConfigError> {
        let mut tenants = BTreeMap::new();
        for entry in v.split(';').map(str::trim) {
            if entry.is_empty() {
                continue;
            }
            let (tenant, numbers) = entry.split_once('=').ok_or_else(|| {
                invalid(
                    SETTING,
                    "each entry must be tenant=+number|+number, entries separated by ;",
                )
            })?;
            let tenant = tenant.trim();
            check_tenant(tenant)?;
            let mut set = BTreeSet::new();
            for n in numbers.split('|').map(str::trim) {
                let number = PhoneNumber::parse(n)
                    .map_err(|e| invalid(SETTING, format!("a number of tenant {tenant:?}: {e}")))?;
                set.insert(number);
            }
            if set.len() > MAX_NUMBERS_PER_TENANT {
                return Err(invalid(
                    SETTING,
                    format!("tenant {tenant:?} has more than {MAX_NUMBERS_PER_TENANT} numbers"),
                ));
            }
            if tenants.insert(tenant.to_owned(), set).is_some() {
                return Err(invalid(
                    SETTING,
                    format!("tenant {tenant:?} is listed twice"),
                ));
            }
            if tenants.len() > MAX_TENANTS {
                return Err(invalid(
                    SETTING,
                    format!("more than {MAX_TENANTS} tenants are listed"),
                ));
            }
        }
        if tenants.is_empty() {
            return Err(invalid(SETTING, "no tenant is listed"));
        }
        Ok(CallerNumbersConfig { tenants })
    }

    /// The engine's policy: `everyone` (the provider's own from-number, if
    /// any) for every tenant, plus each tenant's numbers.
    pub fn policy(
        config: Option<&CallerNumbersConfig>,
        everyone: Option<&PhoneNumber>,
    ) -> CallerNumbers {
        let mut p = CallerNumbers::only(everyone.cloned());
        for (tenant, numbers) in config.map(|c| &c.tenants).into_iter().flatten() {
            p = p.allow(tenant.as_str(), numbers.iter().cloned());
        }
        p
    }
}

fn check_tenant(tenant: &str) -> Result<(), ConfigError> {
    if tenant.is_empty() || tenant.len() > MAX_TENANT_LEN {
        return Err(invalid(
            SETTING,
            format!("a tenant name must be 1 to {MAX_TENANT_LEN} bytes"),
        ));
    }
    if tenant
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '=' | '|' | ';'))
    {
        return Err(invalid(
            SETTING,
            format!("tenant name {tenant:?} has a space, a control character, = | or ;"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use callcat_core::Owner;

    fn n(s: &str) -> PhoneNumber {
        PhoneNumber::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(v: &str) -> ConfigError {
        CallerNumbersConfig::parse(v).expect_err(v)
    }

    #[test]
    fn parses_tenants_and_numbers() {
        let c = CallerNumbersConfig::parse("acme=+14155550100|+14155550101; beta=+14155550200;")
            .expect("parses");
        assert_eq!(c.tenants.len(), 2);
        assert_eq!(c.tenants["acme"].len(), 2);
        assert!(c.tenants["beta"].contains(&n("+14155550200")));
    }

    #[test]
    fn every_bad_value_is_an_error_naming_the_setting() {
        for v in [
            "",
            " ; ",
            "acme",
            "acme=",
            "acme=12345",
            "acme=+14155550100|",
            "acme=+14155550100|oops",
            "=+14155550100",
            "ac me=+14155550100",
            "acme=+14155550100;acme=+14155550101",
        ] {
            assert_eq!(err(v).setting(), Some(SETTING), "{v:?}");
        }
        let long = format!("{}=+14155550100", "t".repeat(MAX_TENANT_LEN + 1));
        assert_eq!(err(&long).setting(), Some(SETTING));
        let at_max = format!("{}=+14155550100", "t".repeat(MAX_TENANT_LEN));
        assert!(CallerNumbersConfig::parse(&at_max).is_ok());
    }

    #[test]
    fn bounds_tenants_and_numbers() {
        let numbers = |k: usize| {
            (0..k)
                .map(|i| format!("+1415555{i:04}"))
                .collect::<Vec<_>>()
                .join("|")
        };
        let ok = format!("acme={}", numbers(MAX_NUMBERS_PER_TENANT));
        assert!(CallerNumbersConfig::parse(&ok).is_ok());
        let too_many = format!("acme={}", numbers(MAX_NUMBERS_PER_TENANT + 1));
        assert_eq!(err(&too_many).setting(), Some(SETTING));
        let tenants = |k: usize| {
            (0..k)
                .map(|i| format!("t{i}=+14155550100"))
                .collect::<Vec<_>>()
                .join(";")
        };
        assert!(CallerNumbersConfig::parse(&tenants(MAX_TENANTS)).is_ok());
        assert_eq!(err(&tenants(MAX_TENANTS + 1)).setting(), Some(SETTING));
    }

    #[test]
    fn the_policy_gives_each_tenant_its_numbers_and_everyone_the_default() {
        let c = CallerNumbersConfig::parse("acme=+14155550100;beta=+14155550200").expect("parses");
        let default = n("+14155550999");
        let p = CallerNumbersConfig::policy(Some(&c), Some(&default));
        let acme = Owner::new("acme", "u");
        assert!(p.allows(&acme, Some(&n("+14155550100"))));
        assert!(p.allows(&acme, Some(&default)));
        assert!(!p.allows(&acme, Some(&n("+14155550200"))));
        let none = CallerNumbersConfig::policy(None, None);
        assert!(!none.allows(&acme, Some(&n("+14155550100"))));
        assert!(none.allows(&acme, None));
    }
}
