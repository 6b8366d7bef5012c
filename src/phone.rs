//! Phone numbers and sender ids. Recipients are normalized to E.164 with the `phonenumber` crate
//! (libphonenumber's metadata), so "+39 347 123 4567", "0039 3471234567" and, with region IT,
//! "347 1234567" are one customer; numbers that cannot exist are refused at intake instead of
//! failing later at the carrier.

use std::str::FromStr;

use phonenumber::country::Id as Region;

/// Why a number or sender was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    /// Not something a phone number is written as.
    #[error("{0:?} is not a phone number")]
    Unparsable(String),
    /// Parsed, but no such number can exist in its country.
    #[error("{0:?} is not a valid number for its country")]
    Invalid(String),
    /// A national number, and no region is configured to read it in.
    #[error("{0:?} has no +country code and no defaults.region is configured")]
    NeedsRegion(String),
    /// Not a number, short code or alphanumeric sender id.
    #[error(
        "{0:?} is not a valid sender: use an international number, a short code of 3 to 8 \
         digits, or up to 11 letters, digits and spaces with at least one letter"
    )]
    BadSender(String),
}

/// Parses a region code from the config (already validated there).
pub fn region(code: Option<&str>) -> Option<Region> {
    code.and_then(|c| Region::from_str(&c.to_ascii_uppercase()).ok())
}

/// Loads the number metadata and compiles its patterns, which the library does lazily.
pub fn warm_up() {
    let _ = normalize("+393471234567", None);
    let _ = normalize("3471234567", region(Some("IT")));
}

/// Longest input worth parsing; anything longer is not a phone number.
const MAX_NUMBER_INPUT: usize = 40;

/// Normalizes a recipient to E.164 (`+393471234567`).
pub fn normalize(input: &str, region: Option<Region>) -> Result<String, PhoneError> {
    let trimmed = input.trim();
    if trimmed.is_empty()
        || trimmed.len() > MAX_NUMBER_INPUT
        || !trimmed
            .chars()
            .all(|c| c.is_ascii_digit() || " +-().".contains(c))
    {
        return Err(PhoneError::Unparsable(input.to_string()));
    }
    let international = trimmed.starts_with('+') || trimmed.starts_with("00");
    if !international && region.is_none() {
        return Err(PhoneError::NeedsRegion(input.to_string()));
    }
    // "00" is the international prefix in most of the world; without a region the parser
    // would not know that, so spell it as "+".
    let spelled = match trimmed.strip_prefix("00") {
        Some(rest) if region.is_none() => format!("+{rest}"),
        _ => trimmed.to_string(),
    };
    let number = phonenumber::parse(region, &spelled)
        .map_err(|_| PhoneError::Unparsable(input.to_string()))?;
    if !phonenumber::is_valid(&number) {
        return Err(PhoneError::Invalid(input.to_string()));
    }
    Ok(number.format().mode(phonenumber::Mode::E164).to_string())
}

/// Checks and normalizes a sender: an E.164 number, a short code, or an alphanumeric id.
pub fn normalize_sender(input: &str, region: Option<Region>) -> Result<String, PhoneError> {
    let s = input.trim();
    let bad = || PhoneError::BadSender(input.to_string());
    if s.is_empty() {
        return Err(bad());
    }
    if s.chars().all(|c| c.is_ascii_digit()) && (3..=8).contains(&s.len()) {
        return Ok(s.to_string());
    }
    if s.starts_with('+') || s.chars().all(|c| c.is_ascii_digit() || " -().".contains(c)) {
        return normalize(s, region).map_err(|_| bad());
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || " .-_&".contains(c);
    if s.chars().count() <= 11
        && s.chars().all(allowed)
        && s.chars().any(|c| c.is_ascii_alphabetic())
    {
        return Ok(s.to_string());
    }
    Err(bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn international_forms_normalize_alike() {
        for input in [
            "+39 347 123 4567",
            "+393471234567",
            "0039 347 1234567",
            "+39-347-1234567",
        ] {
            assert_eq!(normalize(input, None).unwrap(), "+393471234567", "{input}");
        }
    }

    #[test]
    fn national_numbers_need_a_region() {
        assert!(matches!(
            normalize("347 1234567", None),
            Err(PhoneError::NeedsRegion(_))
        ));
        assert_eq!(
            normalize("347 1234567", region(Some("it"))).unwrap(),
            "+393471234567"
        );
        assert_eq!(
            normalize("030 1234567", region(Some("DE"))).unwrap(),
            "+49301234567"
        );
    }

    #[test]
    fn impossible_numbers_are_refused() {
        for input in [
            "",
            "hello",
            "+1",
            "+39 12",
            "+999 1234567",
            &"1".repeat(60),
            "+3934712x4567",
        ] {
            assert!(normalize(input, region(Some("IT"))).is_err(), "{input:?}");
        }
    }

    #[test]
    fn senders() {
        assert_eq!(normalize_sender("ShopName", None).unwrap(), "ShopName");
        assert_eq!(normalize_sender("12345", None).unwrap(), "12345");
        assert_eq!(
            normalize_sender("+39 347 1234567", None).unwrap(),
            "+393471234567"
        );
        for bad in ["", "TwelveLetter", "shop!", "1234567890123", "Ünïcode"] {
            assert!(normalize_sender(bad, None).is_err(), "{bad:?}");
        }
    }
}
