//! Property tests for the code that parses untrusted input.

use proptest::prelude::*;

use poem_openapi::types::ParseFromParameter;

use crate::{
    api::dto::SortParam,
    auth::{AccessTokens, refresh_token_hash},
    domain::{Email, PageRequest, SortDirection, UserSort},
    request_context::is_valid_request_id,
    store::like_pattern,
};

/// Undoes `like_pattern`: the term a LIKE pattern matches literally, if it is well formed.
fn unescape_like(pattern: &str) -> Option<String> {
    let inner = pattern.strip_prefix('%')?.strip_suffix('%')?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '%' | '_' => return None, // an unescaped wildcard would match more than the term
            c => out.push(c),
        }
    }
    Some(out)
}

proptest! {
    #[test]
    fn email_parsing_never_panics_and_is_idempotent(raw in ".{0,300}") {
        if let Ok(email) = Email::parse(&raw) {
            prop_assert_eq!(email.as_str(), raw.trim());
            prop_assert!(email.as_str().chars().count() <= 254);
            prop_assert_eq!(Email::parse(email.as_str()).unwrap(), email);
        }
    }

    #[test]
    fn plausible_addresses_are_accepted(local in "[a-z0-9][a-z0-9._+-]{0,20}[a-z0-9]", domain in "[a-z]{1,20}\\.(com|org|example)") {
        let raw = format!("  {local}@{domain} ");
        prop_assume!(!local.contains(".."));
        prop_assert!(Email::parse(&raw).is_ok(), "{raw:?}");
    }

    #[test]
    fn like_patterns_match_the_term_literally(term in ".{0,40}") {
        prop_assert_eq!(unescape_like(&like_pattern(&term)), Some(term));
    }

    #[test]
    fn sort_keys_round_trip(field in prop::sample::select(vec!["created_at", "email", "full_name", "id"]), desc: bool) {
        let raw = if desc { format!("-{field}") } else { field.to_string() };
        let sort = UserSort::from(SortParam::parse_from_parameter(&raw).unwrap());
        prop_assert_eq!(sort.direction == SortDirection::Desc, desc);
    }

    #[test]
    fn unknown_sort_keys_are_refused(raw in "[a-z_-]{0,20}") {
        let known = ["created_at", "email", "full_name", "id"];
        let name = raw.strip_prefix('-').unwrap_or(&raw);
        prop_assert_eq!(SortParam::parse_from_parameter(&raw).is_ok(), known.contains(&name));
    }

    #[test]
    fn pagination_arithmetic_holds(page in 1u64..u64::MAX, size in 1u64..=100, total in 0u64..10_000_000) {
        let p = PageRequest::new(page, size).unwrap();
        match p.offset() {
            Some(offset) => prop_assert_eq!(offset as u128, (page as u128 - 1) * size as u128),
            None => prop_assert!((page as u128 - 1) * size as u128 > i64::MAX as u128),
        }
        let pages = p.page_count(total);
        prop_assert!(pages * size >= total);
        if total > 0 {
            prop_assert!((pages - 1) * size < total);
        } else {
            prop_assert_eq!(pages, 0);
        }
    }

    #[test]
    fn out_of_range_pages_are_refused(page in 0u64..1, size in prop_oneof![Just(0u64), 101u64..u64::MAX]) {
        prop_assert!(PageRequest::new(page, 10).is_err());
        prop_assert!(PageRequest::new(1, size).is_err());
    }

    #[test]
    fn request_ids_are_kept_only_when_safe(id in ".{0,200}") {
        let safe = !id.is_empty() && id.len() <= 128
            && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        prop_assert_eq!(is_valid_request_id(&id), safe);
    }

    #[test]
    fn arbitrary_bearer_tokens_never_verify_or_panic(token in ".{0,400}") {
        let keys = AccessTokens::new(b"0123456789abcdef0123456789abcdef", std::time::Duration::from_secs(60));
        prop_assert_eq!(keys.verify(&token), None);
    }

    #[test]
    fn issued_tokens_carry_any_user_id(id: i64) {
        let keys = AccessTokens::new(b"0123456789abcdef0123456789abcdef", std::time::Duration::from_secs(60));
        let token = keys.issue(id, chrono::Utc::now()).unwrap();
        prop_assert_eq!(keys.verify(&token), Some(id));
        // Any single changed character of the signed part breaks it.
        let mut bytes = token.into_bytes();
        let at = bytes.len() / 2;
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        prop_assert_eq!(keys.verify(&tampered), None);
    }

    #[test]
    fn refresh_token_hashes_are_stable_hex(token in ".{0,100}") {
        let hash = refresh_token_hash(&token);
        prop_assert_eq!(hash.len(), 64);
        prop_assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
        prop_assert_eq!(hash, refresh_token_hash(&token));
    }
}
