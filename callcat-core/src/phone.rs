//! [`PhoneNumber`]: a validated E.164 number, never a bare string.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

/// A phone number validated with libphonenumber's rules and kept in E.164 form
/// (`+14155552671`).
///
/// `Display` and `Debug` keep only the country code and the last
/// two digits (`+1***71`) so that a number
/// never lands in a log by accident; [`PhoneNumber::as_str`] gives the full number.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhoneNumber(String);

/// Why a string is not a valid phone number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PhoneNumberError {
    /// Nothing was given.
    #[error("phone number is empty")]
    Empty,
    /// E.164 needs the leading `+` and country code.
    #[error("phone number must be in E.164 form, starting with + and the country code")]
    MissingPlus,
    /// Characters other than digits and separators.
    #[error("phone number contains characters other than digits")]
    InvalidCharacters,
    /// Too few or too many digits for E.164 (at most 15).
    #[error("phone number has {0} digits; E.164 allows 8 to 15")]
    BadLength(usize),
    /// The country code is not assigned.
    #[error("phone number has an unknown country code")]
    UnknownCountryCode,
    /// The digits do not form a number that exists in the numbering plan.
    #[error("phone number is not a valid number in its country's numbering plan")]
    NotValid,
}

impl PhoneNumber {
    /// Parses and validates a number in E.164 form. Spaces, dashes, dots and
    /// parentheses are ignored.
    pub fn parse(input: &str) -> Result<Self, PhoneNumberError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(PhoneNumberError::Empty);
        }
        let Some(rest) = trimmed.strip_prefix('+') else {
            return Err(PhoneNumberError::MissingPlus);
        };
        let mut digits = String::with_capacity(rest.len());
        for c in rest.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' | '.' | '(' | ')' => {}
                _ => return Err(PhoneNumberError::InvalidCharacters),
            }
        }
        if !(8..=15).contains(&digits.len()) {
            return Err(PhoneNumberError::BadLength(digits.len()));
        }
        let parsed = phonenumber::parse(None, format!("+{digits}")).map_err(|e| match e {
            phonenumber::ParseError::InvalidCountryCode => PhoneNumberError::UnknownCountryCode,
            _ => PhoneNumberError::NotValid,
        })?;
        if !phonenumber::is_valid(&parsed) {
            return Err(PhoneNumberError::NotValid);
        }
        Ok(PhoneNumber(
            parsed.format().mode(phonenumber::Mode::E164).to_string(),
        ))
    }

    /// The full number in E.164 form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The number for logs: the country code and the last two digits, `+1***71`.
    pub fn masked(&self) -> String {
        mask_phone(&self.0)
    }
}

/// Masks any phone-like string for logs: an E.164 number keeps its country
/// code and its last two digits (`+1***71`); anything else keeps at most its
/// last two characters (and only when it is long enough to hide the rest).
pub fn mask_phone(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= 6 {
        return "***".to_owned();
    }
    let tail: String = chars[chars.len() - 2..].iter().collect();
    let country = s
        .starts_with('+')
        .then(|| phonenumber::parse(None, s).ok())
        .flatten()
        .map(|p| p.code().value().to_string());
    match country {
        Some(cc) => format!("+{cc}***{tail}"),
        None => format!("***{tail}"),
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", self.masked())
    }
}

impl FromStr for PhoneNumber {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        PhoneNumber::parse(s).map_err(|e| Error::validation("phoneNumber", e.to_string()))
    }
}

impl Serialize for PhoneNumber {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PhoneNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PhoneNumber::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_numbers_in_e164_form() {
        let n = PhoneNumber::parse("+1 (415) 555-2671").expect("valid");
        assert_eq!(n.as_str(), "+14155552671");
        assert_eq!(
            PhoneNumber::parse("+442071838750").expect("uk").as_str(),
            "+442071838750"
        );
        assert_eq!(
            PhoneNumber::parse("+4930901820").expect("de").as_str(),
            "+4930901820"
        );
    }

    #[test]
    fn says_why_a_number_is_invalid() {
        assert_eq!(PhoneNumber::parse(""), Err(PhoneNumberError::Empty));
        assert_eq!(
            PhoneNumber::parse("4155552671"),
            Err(PhoneNumberError::MissingPlus)
        );
        assert_eq!(
            PhoneNumber::parse("+1415abc2671"),
            Err(PhoneNumberError::InvalidCharacters)
        );
        assert_eq!(
            PhoneNumber::parse("+1415"),
            Err(PhoneNumberError::BadLength(4))
        );
        assert_eq!(
            PhoneNumber::parse("+1234567890123456"),
            Err(PhoneNumberError::BadLength(16))
        );
        assert_eq!(
            PhoneNumber::parse("+11234567890"),
            Err(PhoneNumberError::NotValid)
        );
    }

    #[test]
    fn masks_in_display_and_debug() {
        let n = PhoneNumber::parse("+14155552671").expect("valid");
        assert_eq!(n.to_string(), "+1***71");
        assert_eq!(format!("{n:?}"), "PhoneNumber(+1***71)");
        let uk = PhoneNumber::parse("+447911123456").expect("valid");
        assert_eq!(uk.to_string(), "+44***56");
        assert_eq!(mask_phone("0791112345"), "***45");
        assert_eq!(mask_phone("12345"), "***");
    }

    #[test]
    fn serde_round_trip_validates() {
        let n = PhoneNumber::parse("+14155552671").expect("valid");
        let json = serde_json::to_string(&n).expect("ser");
        assert_eq!(json, "\"+14155552671\"");
        assert_eq!(serde_json::from_str::<PhoneNumber>(&json).expect("de"), n);
        assert!(serde_json::from_str::<PhoneNumber>("\"12\"").is_err());
    }
}
