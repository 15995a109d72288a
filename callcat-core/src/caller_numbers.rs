//! [`CallerNumbers`]: which caller IDs (`callerNumber`) each tenant may show.
//! A pure policy over values; the call and window services apply it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::error::{Error, Result};
use crate::ids::{Owner, TenantId};
use crate::phone::PhoneNumber;

/// Which caller numbers a call may carry.
///
/// A call without a caller number (the provider's default) is always allowed.
/// [`CallerNumbers::any`] (the default) allows every number, as before this
/// policy existed; [`CallerNumbers::only`] allows a set of numbers to every
/// tenant (typically the provider's own from-number, or none at all), and
/// [`CallerNumbers::allow`] adds numbers for one tenant.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CallerNumbers {
    restricted: bool,
    everyone: BTreeSet<PhoneNumber>,
    tenants: BTreeMap<TenantId, BTreeSet<PhoneNumber>>,
}

impl fmt::Debug for CallerNumbers {
    // Counts only: the numbers themselves are not logged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallerNumbers")
            .field("restricted", &self.restricted)
            .field("everyone", &self.everyone.len())
            .field("tenants", &self.tenants.len())
            .finish()
    }
}

impl CallerNumbers {
    /// Every caller number is allowed.
    pub fn any() -> Self {
        CallerNumbers::default()
    }

    /// Only `numbers` are allowed, to every tenant (none: no caller number at
    /// all may be given), plus what [`CallerNumbers::allow`] adds per tenant.
    pub fn only(numbers: impl IntoIterator<Item = PhoneNumber>) -> Self {
        CallerNumbers {
            restricted: true,
            everyone: numbers.into_iter().collect(),
            tenants: BTreeMap::new(),
        }
    }

    /// Also allows `numbers` to `tenant` (and makes the policy restrictive if
    /// it was [`CallerNumbers::any`]).
    pub fn allow(
        mut self,
        tenant: impl Into<TenantId>,
        numbers: impl IntoIterator<Item = PhoneNumber>,
    ) -> Self {
        self.restricted = true;
        self.tenants
            .entry(tenant.into())
            .or_default()
            .extend(numbers);
        self
    }

    /// Whether any caller number is allowed.
    pub fn is_any(&self) -> bool {
        !self.restricted
    }

    /// Whether `owner` may show `number` (`None`, the provider's default, always may).
    pub fn allows(&self, owner: &Owner, number: Option<&PhoneNumber>) -> bool {
        let Some(n) = number else { return true };
        !self.restricted
            || self.everyone.contains(n)
            || self
                .tenants
                .get(&owner.tenant)
                .is_some_and(|set| set.contains(n))
    }

    /// `Validation` naming `callerNumber` when `owner` may not show `number`.
    pub fn check(&self, owner: &Owner, number: Option<&PhoneNumber>) -> Result<()> {
        if self.allows(owner, number) {
            Ok(())
        } else {
            Err(Error::validation(
                "callerNumber",
                "this caller number is not allowed for this tenant; omit callerNumber to use the default",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> PhoneNumber {
        PhoneNumber::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn any_allows_every_number_and_none() {
        let p = CallerNumbers::any();
        let o = Owner::new("acme", "u");
        assert!(p.allows(&o, Some(&n("+14155550100"))));
        assert!(p.allows(&o, None));
        assert!(p.is_any());
    }

    #[test]
    fn only_allows_the_listed_numbers_and_none() {
        let p = CallerNumbers::only([n("+14155550100")]);
        let o = Owner::new("acme", "u");
        assert!(p.allows(&o, Some(&n("+14155550100"))));
        assert!(p.allows(&o, None));
        let e = p.check(&o, Some(&n("+14155550199"))).unwrap_err();
        assert_eq!(e.field(), Some("callerNumber"));
        assert!(
            CallerNumbers::only([])
                .check(&o, Some(&n("+14155550100")))
                .is_err()
        );
    }

    #[test]
    fn a_tenant_number_is_refused_to_other_tenants() {
        let p = CallerNumbers::only([])
            .allow("acme", [n("+14155550100")])
            .allow("beta", [n("+14155550200")]);
        let acme = Owner::new("acme", "u");
        let beta = Owner::new("beta", "u");
        assert!(p.allows(&acme, Some(&n("+14155550100"))));
        assert!(!p.allows(&acme, Some(&n("+14155550200"))));
        assert!(p.allows(&beta, Some(&n("+14155550200"))));
        assert!(!p.allows(&Owner::new("gamma", "u"), Some(&n("+14155550100"))));
        assert!(!p.is_any());
    }
}
