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
    match e164_as_written(trimmed) {
        Some(e164) => Ok(e164),
        None => normalize_by_parser(input, trimmed, region),
    }
}

/// [`normalize`] of a `trimmed` input made of the characters numbers are written with, by the
/// crate's parser.
fn normalize_by_parser(
    input: &str,
    trimmed: &str,
    region: Option<Region>,
) -> Result<String, PhoneError> {
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
    let e164 = parse_valid(&spelled, region).ok_or_else(|| {
        if phonenumber::parse(parse_region(&spelled, region), &spelled).is_err() {
            PhoneError::Unparsable(input.to_string())
        } else {
            PhoneError::Invalid(input.to_string())
        }
    })?;
    // The E.164 form must read back as itself: the metadata is not always consistent between
    // a national reading and an international one (found by fuzzing), and the same customer
    // must never end up under two numbers. Input already in E.164 was just read exactly so
    // (a "+" number is read the same whatever the region): parsing is most of intake's CPU
    // spent here, so it is not done twice.
    if spelled != e164 && parse_valid(&e164, None).as_deref() != Some(e164.as_str()) {
        return Err(PhoneError::Invalid(input.to_string()));
    }
    Ok(e164)
}

/// A number written as E.164 already ("+" and digits, as integrators mostly send them), read
/// without the crate's parser when it is valid: parsing was two thirds of a number's cost
/// (3.5% of the daemon's CPU with the simulated channel on, more with it off). For such input the parser, reading as from Italy
/// (see [`parse_region`]), takes the country code as the first one to three digits that name
/// one and the rest as the national number unchanged (Italy has no national prefix to strip),
/// which is what this does. Anything else, and every number found invalid here, goes the
/// parser's way, so errors are the parser's own; `tests::numbers_as_written_agree_with_the_parser`
/// compares both over every region's numbers.
fn e164_as_written(trimmed: &str) -> Option<String> {
    use phonenumber::metadata::DATABASE;
    let digits = trimmed.strip_prefix('+')?;
    if !(4..=MAX_E164_DIGITS).contains(&digits.len())
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || digits.starts_with('0')
        || !italy_strips_nothing()
    {
        return None;
    }
    let (code, national) = (1..=3).find_map(|len| {
        let code: u16 = digits[..len].parse().ok()?;
        DATABASE.by_code(&code)?;
        Some((code, &digits[len..]))
    })?;
    // The parser's bounds on a national number; a number of zeros alone it would print
    // differently ("0" more), so it reads those itself.
    let plausible = national.len() >= 2 && national.bytes().any(|b| b != b'0');
    (plausible && validity::is_valid_parts(code, national)).then(|| trimmed.to_string())
}

/// Whether the metadata of Italy, as which "+" numbers are read, has no national prefix the
/// parser would strip: true in every metadata release so far; checked, not assumed.
fn italy_strips_nothing() -> bool {
    static STRIPS_NOTHING: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *STRIPS_NOTHING.get_or_init(|| {
        phonenumber::metadata::DATABASE
            .by_id(Region::IT.as_ref())
            .is_some_and(|it| {
                it.national_prefix().is_none() && it.national_prefix_for_parsing().is_none()
            })
    })
}

/// For a number with its +country code the default region must not matter, but the
/// `phonenumber` crate strips a national prefix after the country code: the country's own
/// given no region ("+7 812 ..." lost its 8, found by fuzzing), the given region's otherwise
/// (with US, "+49 151 ..." lost its 1: German mobiles went to the wrong number). Italy has no
/// national prefix, so reading every "+" number as from Italy strips nothing, and the result
/// is the same whatever defaults.region says.
fn parse_region(spelled: &str, region: Option<Region>) -> Option<Region> {
    if spelled.starts_with('+') {
        Some(Region::IT)
    } else {
        region
    }
}

/// Parses, validates and formats as E.164, or None.
fn parse_valid(spelled: &str, region: Option<Region>) -> Option<String> {
    let number = phonenumber::parse(parse_region(spelled, region), spelled).ok()?;
    if !validity::is_valid(&number) {
        return None;
    }
    // What the crate's E.164 formatter writes, without the national format it looks up first.
    let e164 = format!("+{}{}", number.code().value(), number.national());
    // E.164 allows at most 15 digits; the metadata accepts some longer ones.
    (e164.len() <= MAX_E164_DIGITS + 1).then_some(e164)
}

/// `phonenumber::is_valid`, with every pattern compiled once. The crate looks each pattern up
/// by its text in an LRU of 100 compiled patterns behind one mutex: hashing and comparing
/// patterns hundreds of bytes long made validation two thirds of a number's cost (6.5 µs of
/// 9.8), and recipients in more countries than fit in 100 patterns would recompile them over
/// and over. Same metadata, same rules: `tests::validity_agrees_with_the_crate` checks them
/// against the crate's over every region's numbers.
mod validity {
    use std::collections::HashMap;
    use std::sync::{Arc, RwLock};

    use phonenumber::metadata::{DATABASE, Descriptor, Metadata};
    use regex::Regex;

    /// Compiled patterns kept at most: about a dozen per country that recipients are in. Past
    /// it they are all dropped and compiled again as used, which bounds the memory.
    const MAX_COMPILED: usize = 512;

    /// Compiled patterns by the address of their source text in the crate's static database
    /// (never moved nor freed).
    static COMPILED: RwLock<Option<HashMap<usize, Arc<Regex>>>> = RwLock::new(None);

    /// Whether the pattern whose source is `pattern` matches at the start of `text` (the
    /// crate's `find` at 0).
    fn matches_at_start(pattern: &'static str, text: &str) -> bool {
        let key = pattern.as_ptr() as usize;
        // Matched under the read lock: readers share it, and the match is short.
        let found = COMPILED
            .read()
            .ok()
            .and_then(|map| Some(map.as_ref()?.get(&key)?.is_match(text)));
        let regex = match found {
            Some(matched) => return matched,
            None => {
                // As the crate builds them (whitespace ignored), anchored at the start.
                let Ok(regex) = regex::RegexBuilder::new(&format!("^(?:{pattern})"))
                    .ignore_whitespace(true)
                    .build()
                else {
                    return false;
                };
                let regex = Arc::new(regex);
                if let Ok(mut map) = COMPILED.write() {
                    let map = map.get_or_insert_with(HashMap::new);
                    if map.len() >= MAX_COMPILED {
                        map.clear();
                    }
                    map.insert(key, regex.clone());
                }
                regex
            }
        };
        regex.is_match(text)
    }

    /// `Descriptor::is_match`.
    fn describes(descriptor: &'static Descriptor, national: &str) -> bool {
        let lengths = descriptor.possible_length();
        let length = u16::try_from(national.len()).unwrap_or(u16::MAX);
        (lengths.is_empty() || lengths.contains(&length))
            && matches_at_start(descriptor.national_number().as_str(), national)
    }

    /// `number_type(meta, national) != Type::Unknown`. Any type will do, so mobile is tried
    /// first: nearly every recipient of an SMS is one (the crate's order, which decides the
    /// type, tries it last, after nine other patterns).
    fn has_type(meta: &'static Metadata, national: &str) -> bool {
        let d = meta.descriptors();
        describes(d.general(), national)
            && [
                d.mobile(),
                d.fixed_line(),
                d.premium_rate(),
                d.toll_free(),
                d.shared_cost(),
                d.voip(),
                d.personal_number(),
                d.pager(),
                d.uan(),
                d.voicemail(),
            ]
            .into_iter()
            .flatten()
            .any(|descriptor| describes(descriptor, national))
    }

    /// `phonenumber::is_valid`: the metadata of the number's region (found as `source_for`
    /// does) gives it a type.
    pub(super) fn is_valid(number: &phonenumber::PhoneNumber) -> bool {
        is_valid_parts(number.code().value(), &number.national().to_string())
    }

    /// [`is_valid`] of the number with country code `code` and national number `national`
    /// (its digits as the crate prints them, leading zeros included).
    pub(super) fn is_valid_parts(code: u16, national: &str) -> bool {
        let Some(regions) = DATABASE.region(&code) else {
            return false;
        };
        let meta = match regions.as_slice() {
            ["001"] => DATABASE.by_code(&code).and_then(|m| m.into_iter().next()),
            [region] => region
                .parse::<phonenumber::country::Id>()
                .ok()
                .and_then(|_| DATABASE.by_id(*region)),
            several => several.iter().find_map(|region| {
                let meta = DATABASE.by_id(*region)?;
                let ours = match meta.leading_digits() {
                    Some(pattern) => matches_at_start(pattern.as_str(), national),
                    None => has_type(meta, national),
                };
                (ours && region.parse::<phonenumber::country::Id>().is_ok()).then_some(meta)
            }),
        };
        meta.is_some_and(|meta| has_type(meta, national))
    }
}

/// Most digits of an E.164 number (ITU-T E.164 §6).
const MAX_E164_DIGITS: usize = 15;

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

    #[test]
    fn international_numbers_keep_every_digit_whatever_the_region() {
        // "+" numbers: E.164 is the digits as written. (A "1" after +49 was once taken for the
        // US national prefix and dropped: German mobiles went to the wrong number.)
        let numbers = [
            "+4915123456789",
            "+4917612345678",
            "+491701234567",
            "+49301234567",
            "+78121234567",
            "+12125550123",
            "+447911123456",
            "+393471234567",
            "+33612345678",
            "+34612345678",
            "+5511987654321",
            "+61412345678",
            "+8613812345678",
            "+819012345678",
            "+31612345678",
            "+436641234567",
        ];
        for region in [
            None,
            region(Some("IT")),
            region(Some("US")),
            region(Some("DE")),
        ] {
            for n in numbers {
                assert_eq!(
                    normalize(n, region).as_deref(),
                    Ok(n),
                    "{n} with {region:?}"
                );
            }
        }
        // The same numbers written with 00 and spaces, from a region that dials 00.
        assert_eq!(
            normalize("0049 151 2345 6789", region(Some("IT"))).as_deref(),
            Ok("+4915123456789")
        );
    }

    use super::*;

    #[test]
    fn validity_agrees_with_the_crate() {
        use phonenumber::metadata::DATABASE;
        // Every region's example numbers, each with its last digit changed, one digit more and
        // one less, and random digits of the region's lengths: valid and invalid alike.
        let mut rng = fastrand::Rng::with_seed(0x9a11a);
        let (mut checked, mut valid) = (0, 0);
        for meta in DATABASE.iter() {
            let d = meta.descriptors();
            let descriptors = [
                Some(d.general()),
                d.fixed_line(),
                d.mobile(),
                d.toll_free(),
                d.premium_rate(),
                d.shared_cost(),
                d.voip(),
                d.personal_number(),
                d.pager(),
                d.uan(),
                d.voicemail(),
                d.short_code(),
            ];
            let mut nationals = Vec::new();
            for descriptor in descriptors.into_iter().flatten() {
                if let Some(example) = descriptor.example() {
                    let mut shorter = example.to_string();
                    shorter.pop();
                    nationals.push(example.to_string());
                    nationals.push(format!("{example}{}", rng.u8(0..10)));
                    nationals.push(format!("{shorter}{}", rng.u8(0..10)));
                    nationals.push(shorter);
                }
                for &length in descriptor.possible_length() {
                    let digits = (0..length).map(|_| char::from(b'0' + rng.u8(0..10)));
                    nationals.push(digits.collect());
                }
            }
            for national in nationals {
                let text = format!("+{}{national}", meta.country_code());
                let Ok(number) = phonenumber::parse(None, &text) else {
                    continue;
                };
                let expected = phonenumber::is_valid(&number);
                assert_eq!(
                    validity::is_valid(&number),
                    expected,
                    "{text} ({})",
                    meta.id()
                );
                checked += 1;
                valid += usize::from(expected);
            }
        }
        // Both answers are well represented, or the comparison proves little.
        assert!(
            checked > 5_000 && valid > 1_000 && checked - valid > 1_000,
            "{checked} {valid}"
        );
    }

    #[test]
    fn numbers_as_written_agree_with_the_parser() {
        use phonenumber::metadata::DATABASE;
        // "+" and digits: every region's example numbers, changed as in
        // `validity_agrees_with_the_crate`, and random digits after each country code and
        // alone (codes of one to three digits, codes that name no country, leading zeros,
        // all lengths the fast path takes and one more on each side).
        let mut rng = fastrand::Rng::with_seed(0xe164);
        let mut inputs = Vec::new();
        for meta in DATABASE.iter() {
            let code = meta.country_code();
            let d = meta.descriptors();
            for descriptor in [Some(d.general()), d.fixed_line(), d.mobile(), d.toll_free()]
                .into_iter()
                .flatten()
            {
                if let Some(example) = descriptor.example() {
                    let mut shorter = example.to_string();
                    shorter.pop();
                    inputs.push(format!("+{code}{example}"));
                    inputs.push(format!("+{code}{example}{}", rng.u8(0..10)));
                    inputs.push(format!("+{code}{shorter}{}", rng.u8(0..10)));
                    inputs.push(format!("+{code}{shorter}"));
                    inputs.push(format!("+{code}0{example}"));
                }
            }
            for length in 0..=14 {
                let digits: String = (0..length)
                    .map(|_| char::from(b'0' + rng.u8(0..10)))
                    .collect();
                inputs.push(format!("+{code}{digits}"));
                inputs.push(format!("+{code}{}", "0".repeat(length)));
            }
        }
        for _ in 0..5_000 {
            let length = rng.usize(1..=17);
            let digits: String = (0..length)
                .map(|_| char::from(b'0' + rng.u8(0..10)))
                .collect();
            inputs.push(format!("+{digits}"));
        }
        let mut taken = 0;
        for input in &inputs {
            let fast = e164_as_written(input);
            taken += usize::from(fast.is_some());
            for region in [
                None,
                region(Some("IT")),
                region(Some("US")),
                region(Some("RU")),
            ] {
                let parsed = normalize_by_parser(input, input, region);
                if let Some(e164) = &fast {
                    assert_eq!(parsed.as_ref(), Ok(e164), "{input} with {region:?}");
                }
                assert_eq!(normalize(input, region), parsed, "{input} with {region:?}");
            }
        }
        // The fast path is taken for most valid numbers, or the comparison proves little.
        assert!(taken > 1_500, "{taken} of {}", inputs.len());
    }

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
    fn international_numbers_do_not_depend_on_the_region() {
        // Found by fuzzing: without a region the parser dropped the national prefix.
        for (input, expected) in [
            ("+7 812 312-34-56", "+78123123456"),
            ("+7 800 555-35-35", "+78005553535"),
            ("+78(650) 825-650)", "+78650825650"),
            ("+393471234567", "+393471234567"),
        ] {
            for region in [
                None,
                region(Some("IT")),
                region(Some("DE")),
                region(Some("US")),
            ] {
                let got = normalize(input, region);
                assert_eq!(got.as_deref(), Ok(expected), "{input} in {region:?}");
                // Idempotent: the output reads back as itself.
                assert_eq!(normalize(expected, None).as_deref(), Ok(expected));
            }
        }
    }

    #[test]
    fn national_and_international_readings_agree() {
        // Once refused: read as +39..., the US national prefix "1" was stripped from it and the
        // E.164 form did not read back as itself. Now both readings are one number.
        assert_eq!(
            normalize("144234547", region(Some("IT"))).as_deref(),
            Ok("+39144234547")
        );
        assert_eq!(
            normalize("+39144234547", None).as_deref(),
            Ok("+39144234547")
        );
    }

    #[test]
    fn more_than_fifteen_digits_is_refused() {
        assert!(normalize("+49-2330-1 1267145677", None).is_err());
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
