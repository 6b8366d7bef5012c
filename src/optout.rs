//! Opt-outs: customers who answered STOP (or STOPALL) are on a suppression list; marketing to
//! them, or anything when they stopped all, is refused at submit. This module is the pure part:
//! the list's entry, which keyword an inbound text is, what a keyword does to an entry, and the
//! configured confirmation texts. The store applies it atomically with the inbound message
//! ([`crate::store`]). No I/O here.

use serde::{Deserialize, Serialize};

use crate::codec::gsm7::{self, Encoding};
use crate::config::OptOutSettings;
use crate::message::{Kind, MessageId, Millis};

/// What a customer opted out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptOutScope {
    /// Marketing messages only; transactional ones (order updates, codes) still go.
    Marketing,
    /// Every message.
    All,
}

impl OptOutScope {
    /// The name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            OptOutScope::Marketing => "marketing",
            OptOutScope::All => "all",
        }
    }

    /// Whether a message of `kind` may not go to a customer with this opt-out.
    pub fn refuses(self, kind: Kind) -> bool {
        match self {
            OptOutScope::All => true,
            OptOutScope::Marketing => kind == Kind::Marketing,
        }
    }
}

/// How an entry came onto the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptOutSource {
    /// The customer sent a STOP-type keyword.
    Keyword,
    /// Someone added it through `POST /v1/optouts`.
    Api,
}

impl OptOutSource {
    /// The name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            OptOutSource::Keyword => "keyword",
            OptOutSource::Api => "api",
        }
    }
}

/// One customer on the suppression list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptOut {
    /// The customer, in E.164.
    pub number: String,
    /// What they opted out of.
    pub scope: OptOutScope,
    /// When.
    pub at: Millis,
    /// The customer's message that did it (None when added through the API).
    pub text: Option<String>,
    /// The stored inbound message that did it.
    pub inbound_id: Option<MessageId>,
    /// Keyword or API.
    pub source: OptOutSource,
}

/// What an inbound message is, when it is one of the configured keywords.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Keyword {
    /// Opt out of marketing.
    Stop,
    /// Opt out of everything.
    StopAll,
    /// Opt in again.
    Start,
    /// Ask for the help text.
    Help,
}

/// What a keyword does to the customer's entry on the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Put (or replace) the entry with this scope.
    Set(OptOutScope),
    /// Delete the entry.
    Remove,
    /// Leave the list as it is.
    Keep,
}

/// What a keyword does, given the customer's entry now: the change and which keyword's
/// confirmation answers it. A STOP from a customer who sent STOPALL keeps scope All (a later,
/// narrower STOP must not quietly let transactional messages through again) and is confirmed
/// with the STOPALL text, which says what is in force.
pub fn decide(existing: Option<OptOutScope>, keyword: Keyword) -> (Change, Keyword) {
    match keyword {
        Keyword::Stop if existing == Some(OptOutScope::All) => (Change::Keep, Keyword::StopAll),
        Keyword::Stop => (Change::Set(OptOutScope::Marketing), Keyword::Stop),
        Keyword::StopAll => (Change::Set(OptOutScope::All), Keyword::StopAll),
        Keyword::Start => (Change::Remove, Keyword::Start),
        Keyword::Help => (Change::Keep, Keyword::Help),
    }
}

/// A confirmation text with its alphabet and size, computed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyText {
    /// The text.
    pub text: String,
    /// Its alphabet.
    pub encoding: Encoding,
    /// Its SMS parts.
    pub parts: u8,
}

impl ReplyText {
    /// None for an empty text (no reply).
    fn new(text: &str) -> Option<ReplyText> {
        if text.trim().is_empty() {
            return None;
        }
        let (encoding, parts) = gsm7::count_parts(text);
        Some(ReplyText {
            text: text.to_string(),
            encoding,
            parts: u8::try_from(parts).unwrap_or(u8::MAX),
        })
    }
}

/// The keyword lists and confirmation texts in force (`[optouts]`), for the store's writer.
#[derive(Debug, Clone, Default)]
pub struct OptOutRules {
    /// Whether customers' keywords change the list and get replies. The list itself (and the
    /// check at submit) applies either way.
    pub enabled: bool,
    /// Folded keyword -> what it is.
    keywords: Vec<(String, Keyword)>,
    replies: [Option<ReplyText>; 4],
    /// How long a confirmation may wait to be sent (`defaults.validity`).
    pub reply_validity_ms: Millis,
}

fn slot(keyword: Keyword) -> usize {
    match keyword {
        Keyword::Stop => 0,
        Keyword::StopAll => 1,
        Keyword::Start => 2,
        Keyword::Help => 3,
    }
}

impl OptOutRules {
    /// The rules of `[optouts]` (already validated); confirmations get `validity_ms`.
    pub fn new(settings: &OptOutSettings, validity_ms: Millis) -> OptOutRules {
        let mut keywords = Vec::new();
        for (_, list, keyword) in settings.lists() {
            keywords.extend(list.iter().map(|k| (fold(k), keyword)));
        }
        OptOutRules {
            enabled: settings.enabled,
            keywords,
            replies: [
                ReplyText::new(&settings.stop_reply),
                ReplyText::new(&settings.stop_all_reply),
                ReplyText::new(&settings.start_reply),
                ReplyText::new(&settings.help_reply),
            ],
            reply_validity_ms: validity_ms,
        }
    }

    /// Which keyword `text` is, if any (and the rules are enabled). Only the whole message
    /// counts, so "stop sending me the wrong size" is no STOP: it is trimmed, loses trailing
    /// `.`, `!` and `?`, and is compared ignoring case and accents ("Arrêt!" is ARRET).
    pub fn keyword(&self, text: &str) -> Option<Keyword> {
        if !self.enabled {
            return None;
        }
        // A keyword is one word: anything longer is not worth folding.
        if text.len() > MAX_KEYWORD_INPUT {
            return None;
        }
        let word = text.trim().trim_end_matches(['.', '!', '?']).trim_end();
        if word.is_empty() {
            return None;
        }
        let folded = fold(word);
        self.keywords
            .iter()
            .find(|(k, _)| *k == folded)
            .map(|(_, keyword)| *keyword)
    }

    /// The confirmation for `keyword`, None when its text is empty.
    pub fn reply(&self, keyword: Keyword) -> Option<&ReplyText> {
        self.replies[slot(keyword)].as_ref()
    }
}

/// Longest inbound text looked at for a keyword, in bytes.
const MAX_KEYWORD_INPUT: usize = 64;

/// Lowercase without accents: how keywords and texts are compared. Covers the accented Latin
/// letters of Italian, Spanish, French and German, precomposed or followed by combining marks.
pub fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().flat_map(char::to_lowercase) {
        match c {
            // Combining diacritical marks (a decomposed "é" is "e" and U+0301).
            '\u{0300}'..='\u{036f}' => {}
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' => out.push('a'),
            'ç' => out.push('c'),
            'è' | 'é' | 'ê' | 'ë' => out.push('e'),
            'ì' | 'í' | 'î' | 'ï' => out.push('i'),
            'ñ' => out.push('n'),
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' => out.push('o'),
            'ù' | 'ú' | 'û' | 'ü' => out.push('u'),
            'ý' | 'ÿ' => out.push('y'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> OptOutRules {
        OptOutRules::new(&OptOutSettings::default(), 3_600_000)
    }

    #[test]
    fn only_a_whole_message_is_a_keyword_in_any_case_with_trailing_punctuation() {
        let r = rules();
        for (text, expected) in [
            ("STOP", Some(Keyword::Stop)),
            ("stop", Some(Keyword::Stop)),
            ("  Stop.\n", Some(Keyword::Stop)),
            ("STOP!!", Some(Keyword::Stop)),
            ("stop ?", Some(Keyword::Stop)),
            ("Unsubscribe", Some(Keyword::Stop)),
            ("STOPALL", Some(Keyword::StopAll)),
            ("StopAll!", Some(Keyword::StopAll)),
            ("start", Some(Keyword::Start)),
            ("UNSTOP", Some(Keyword::Start)),
            ("help?", Some(Keyword::Help)),
            ("Info", Some(Keyword::Help)),
            ("stop sending me the wrong size", None),
            ("please stop", None),
            ("STOP ALL", None),
            ("stopp!", Some(Keyword::Stop)),
            ("!stop", None),
            ("", None),
            ("  ...", None),
            ("fine", None),
        ] {
            assert_eq!(r.keyword(text), expected, "{text:?}");
        }
    }

    #[test]
    fn italian_spanish_french_and_german_keywords_match_with_or_without_accents() {
        let r = rules();
        for (text, expected) in [
            ("Basta", Keyword::Stop),
            ("ANNULLA", Keyword::Stop),
            ("disiscrivi", Keyword::Stop),
            ("Baja", Keyword::Stop),
            ("parar", Keyword::Stop),
            ("Arrêt", Keyword::Stop),
            ("ARRET", Keyword::Stop),
            // "e" followed by a combining circumflex.
            ("arre\u{0302}t", Keyword::Stop),
            ("Désabonner", Keyword::Stop),
            ("desabonner", Keyword::Stop),
            ("Abmelden", Keyword::Stop),
            ("ende", Keyword::Stop),
            ("iscrivi", Keyword::Start),
            ("Alta", Keyword::Start),
            ("anmelden", Keyword::Start),
            ("aiuto", Keyword::Help),
            ("Ayuda", Keyword::Help),
            ("aide", Keyword::Help),
            ("Hilfe!", Keyword::Help),
        ] {
            assert_eq!(r.keyword(text), Some(expected), "{text:?}");
        }
    }

    #[test]
    fn disabled_rules_and_long_texts_match_nothing() {
        let settings = OptOutSettings {
            enabled: false,
            ..OptOutSettings::default()
        };
        let r = OptOutRules::new(&settings, 1);
        assert_eq!(r.keyword("STOP"), None);
        assert_eq!(OptOutRules::default().keyword("STOP"), None);
        let long = format!("STOP{}", " ".repeat(100));
        assert_eq!(rules().keyword(&long), None);
        // Folding never panics on any text.
        assert_eq!(fold("ǅǈ ß İ 😀"), "ǆǉ ß i 😀");
    }

    #[test]
    fn replies_are_gsm7_and_empty_texts_mean_none() {
        let r = rules();
        for k in [
            Keyword::Stop,
            Keyword::StopAll,
            Keyword::Start,
            Keyword::Help,
        ] {
            let reply = r.reply(k).expect("a default reply");
            assert_eq!(reply.encoding, Encoding::Gsm7, "{reply:?}");
            assert_eq!(reply.parts, 1, "{reply:?}");
        }
        let settings = OptOutSettings {
            help_reply: " ".into(),
            ..OptOutSettings::default()
        };
        assert!(
            OptOutRules::new(&settings, 1)
                .reply(Keyword::Help)
                .is_none()
        );
    }

    #[test]
    fn a_narrower_stop_keeps_stop_all_and_start_removes() {
        use OptOutScope::*;
        assert_eq!(
            decide(None, Keyword::Stop),
            (Change::Set(Marketing), Keyword::Stop)
        );
        assert_eq!(
            decide(Some(Marketing), Keyword::Stop),
            (Change::Set(Marketing), Keyword::Stop)
        );
        assert_eq!(
            decide(Some(All), Keyword::Stop),
            (Change::Keep, Keyword::StopAll)
        );
        assert_eq!(
            decide(Some(Marketing), Keyword::StopAll),
            (Change::Set(All), Keyword::StopAll)
        );
        assert_eq!(
            decide(Some(All), Keyword::Start),
            (Change::Remove, Keyword::Start)
        );
        assert_eq!(
            decide(None, Keyword::Start),
            (Change::Remove, Keyword::Start)
        );
        assert_eq!(
            decide(Some(All), Keyword::Help),
            (Change::Keep, Keyword::Help)
        );
        assert!(Marketing.refuses(Kind::Marketing));
        assert!(!Marketing.refuses(Kind::Transactional));
        assert!(All.refuses(Kind::Transactional));
    }
}
