//! `GET /api/v1/users`: filters, search, sorting and pagination, all done by the database.

use chrono::{DateTime, Utc};
use roster::domain::{Email, FullName, NewUser};
use serde_json::Value;

use crate::helpers::{ADMIN_EMAIL, TestApp, backend_tests};

fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339).unwrap().to_utc()
}

/// Inserts a user directly, with a chosen creation time.
async fn seed(
    app: &TestApp,
    email: &str,
    full_name: Option<&str>,
    active: bool,
    superuser: bool,
    created: &str,
) -> i64 {
    app.store
        .create_user(
            NewUser {
                email: Email::parse(email).unwrap(),
                full_name: full_name.map(|n| FullName::parse(n).unwrap()),
                hashed_password: "not-a-real-hash".into(),
                is_active: active,
                is_superuser: superuser,
                email_verified: false,
                created_at: Some(at(created)),
            },
            Default::default(),
        )
        .await
        .unwrap()
        .id
}

async fn list(app: &TestApp, query: &str) -> Value {
    let r = app
        .get(&format!("/api/v1/users?{query}"), Some(app.admin()))
        .await;
    assert_eq!(r.status, 200, "{query}: {}", r.text);
    r.body
}

fn emails(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap().to_string())
        .collect()
}

fn ids(page: &Value) -> Vec<i64> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_i64().unwrap())
        .collect()
}

/// Five users besides the admin (created "now"), at distinct and tied times.
async fn five_users(app: &TestApp) -> Vec<i64> {
    vec![
        seed(
            app,
            "b.brown@example.com",
            Some("bob Brown"),
            true,
            false,
            "2025-01-01T00:00:00Z",
        )
        .await,
        seed(
            app,
            "A.adams@example.com",
            Some("Alice Adams"),
            false,
            false,
            "2025-01-02T00:00:00Z",
        )
        .await,
        seed(
            app,
            "c.cole@example.com",
            None,
            true,
            true,
            "2025-01-02T00:00:00Z",
        )
        .await,
        seed(
            app,
            "d.diaz@example.com",
            Some("alice adams"),
            true,
            false,
            "2025-01-03T00:00:00Z",
        )
        .await,
        seed(
            app,
            "e.eve@example.com",
            Some("Eve"),
            false,
            true,
            "2025-01-04T12:30:00Z",
        )
        .await,
    ]
}

backend_tests! {
    async fn defaults_are_page_1_size_50_newest_first(backend) {
        let app = TestApp::spawn(backend).await;
        five_users(&app).await;
        let page = list(&app, "").await;
        assert_eq!(page["page"], 1);
        assert_eq!(page["size"], 50);
        assert_eq!(page["total"], 6);
        assert_eq!(page["pages"], 1);
        assert_eq!(emails(&page)[0], ADMIN_EMAIL);
        assert_eq!(emails(&page)[5], "b.brown@example.com");
    }

    async fn pages_are_ceil_of_total_over_size_and_past_the_end_is_empty(backend) {
        let app = TestApp::spawn(backend).await;
        five_users(&app).await;
        let p1 = list(&app, "size=4&sort=id").await;
        assert_eq!((p1["total"].as_u64(), p1["pages"].as_u64(), ids(&p1).len()), (Some(6), Some(2), 4));
        let p2 = list(&app, "size=4&page=2&sort=id").await;
        assert_eq!(ids(&p2).len(), 2);
        let all: Vec<i64> = ids(&p1).into_iter().chain(ids(&p2)).collect();
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(all, sorted, "pages must not overlap or skip");
        sorted.dedup();
        assert_eq!(sorted.len(), 6);
        let past = list(&app, "size=4&page=3").await;
        assert_eq!(past["items"], serde_json::json!([]));
        assert_eq!((past["total"].as_u64(), past["pages"].as_u64(), past["page"].as_u64()), (Some(6), Some(2), Some(3)));
        let huge = list(&app, "page=18446744073709551615&size=100").await;
        assert_eq!(huge["items"], serde_json::json!([]));
        let exact = list(&app, "size=3").await;
        assert_eq!(exact["pages"], 2);
        let none = list(&app, "search=nobody-matches-this").await;
        assert_eq!((none["total"].as_u64(), none["pages"].as_u64()), (Some(0), Some(0)));
    }

    async fn out_of_range_paging_and_bad_query_values_are_422(backend) {
        let app = TestApp::spawn(backend).await;
        for (query, field) in [
            ("size=0", "size"), ("size=101", "size"), ("page=0", "page"), ("page=-1", "page"),
            ("page=x", "page"), ("sort=password", "sort"), ("sort=", "sort"), ("is_active=maybe", "is_active"),
            ("created_after=yesterday", "created_after"), ("created_before=2025-13-01T00:00:00Z", "created_before"),
        ] {
            let r = app.get(&format!("/api/v1/users?{query}"), Some(app.admin())).await;
            r.assert_error(422, "validation_error");
            assert_eq!(r.error_fields(), [field], "{query}");
        }
        assert_eq!(list(&app, "size=1").await["size"], 1);
        assert_eq!(list(&app, "size=100").await["size"], 100);
    }

    async fn flag_filters_combine(backend) {
        let app = TestApp::spawn(backend).await;
        five_users(&app).await;
        assert_eq!(list(&app, "is_active=false&sort=email").await["total"], 2);
        assert_eq!(emails(&list(&app, "is_active=false&sort=email").await), ["A.adams@example.com", "e.eve@example.com"]);
        assert_eq!(list(&app, "is_superuser=true").await["total"], 3);
        assert_eq!(emails(&list(&app, "is_superuser=true&is_active=false").await), ["e.eve@example.com"]);
        assert_eq!(list(&app, "is_active=true&is_superuser=false").await["total"], 2);
    }

    async fn created_after_is_inclusive_and_created_before_exclusive(backend) {
        let app = TestApp::spawn(backend).await;
        five_users(&app).await;
        let page = list(&app, "created_after=2025-01-02T00:00:00Z&created_before=2025-01-04T12:30:00Z&sort=id").await;
        assert_eq!(emails(&page), ["A.adams@example.com", "c.cole@example.com", "d.diaz@example.com"]);
        // Offsets other than Z mean the same instant.
        let shifted = list(&app, "created_after=2025-01-02T01:00:00%2B01:00&created_before=2025-01-04T13:30:00%2B01:00&sort=id").await;
        assert_eq!(emails(&shifted), emails(&page));
        assert_eq!(list(&app, "created_before=2025-01-01T00:00:00Z").await["total"], 0);
        assert_eq!(list(&app, "created_after=2025-01-04T12:30:00Z&created_before=2025-01-05T00:00:00Z").await["total"], 1);
    }

    async fn search_is_a_case_insensitive_substring_of_email_or_name(backend) {
        let app = TestApp::spawn(backend).await;
        five_users(&app).await;
        assert_eq!(emails(&list(&app, "search=ADAMS&sort=id").await), ["A.adams@example.com", "d.diaz@example.com"]);
        assert_eq!(emails(&list(&app, "search=eve").await), ["e.eve@example.com"]);
        assert_eq!(list(&app, "search=example.com").await["total"], 6);
        assert_eq!(list(&app, "search=").await["total"], 6, "an empty search filters nothing");
        assert_eq!(list(&app, "search=brown&is_active=false").await["total"], 0);
    }

    async fn search_takes_wildcards_quotes_and_unicode_literally(backend) {
        let app = TestApp::spawn(backend).await;
        seed(&app, "percent@example.com", Some("100% sure"), true, false, "2025-01-01T00:00:00Z").await;
        seed(&app, "under_score@example.com", Some("Plain"), true, false, "2025-01-01T00:00:00Z").await;
        seed(&app, "underxscore@example.com", Some("Plain"), true, false, "2025-01-01T00:00:00Z").await;
        seed(&app, "quote@example.com", Some("O'Brien \"Bob\""), true, false, "2025-01-01T00:00:00Z").await;
        seed(&app, "slash@example.com", Some("back\\slash"), true, false, "2025-01-01T00:00:00Z").await;
        seed(&app, "zoe@example.com", Some("Zoë Ünïcødé"), true, false, "2025-01-01T00:00:00Z").await;
        let q = |s: &str| format!("search={}&sort=email", urlencode(s));
        assert_eq!(emails(&list(&app, &q("%")).await), ["percent@example.com"]);
        assert_eq!(emails(&list(&app, &q("0% s")).await), ["percent@example.com"]);
        assert_eq!(emails(&list(&app, &q("r_s")).await), ["under_score@example.com"]);
        assert_eq!(emails(&list(&app, &q("_")).await), ["under_score@example.com"]);
        assert_eq!(emails(&list(&app, &q("o'brien")).await), ["quote@example.com"]);
        assert_eq!(emails(&list(&app, &q("\"bob\"")).await), ["quote@example.com"]);
        assert_eq!(emails(&list(&app, &q("k\\s")).await), ["slash@example.com"]);
        assert_eq!(emails(&list(&app, &q("\\")).await), ["slash@example.com"]);
        assert_eq!(emails(&list(&app, &q("Zoë Ünï")).await), ["zoe@example.com"]);
        assert_eq!(emails(&list(&app, &q("zoë")).await), ["zoe@example.com"], "ASCII letters fold case");
        assert_eq!(list(&app, &q("'; DROP TABLE users; --")).await["total"], 0);
        assert_eq!(app.store.count_users().await.unwrap(), 7);
    }

    async fn created_at_sorts_break_ties_by_id_in_the_same_direction(backend) {
        let app = TestApp::spawn(backend).await;
        let u = five_users(&app).await;
        let asc = ids(&list(&app, "sort=created_at&created_before=2026-01-01T00:00:00Z").await);
        assert_eq!(asc, [u[0], u[1], u[2], u[3], u[4]]);
        let desc = ids(&list(&app, "sort=-created_at&created_before=2026-01-01T00:00:00Z").await);
        assert_eq!(desc, [u[4], u[3], u[2], u[1], u[0]]);
    }

    async fn email_sorts_by_lowercase_form(backend) {
        let app = TestApp::spawn(backend).await;
        five_users(&app).await;
        let asc = emails(&list(&app, "sort=email&created_before=2026-01-01T00:00:00Z").await);
        assert_eq!(asc, ["A.adams@example.com", "b.brown@example.com", "c.cole@example.com", "d.diaz@example.com", "e.eve@example.com"]);
        let desc = emails(&list(&app, "sort=-email&created_before=2026-01-01T00:00:00Z").await);
        assert_eq!(desc, asc.iter().rev().cloned().collect::<Vec<_>>());
    }

    async fn full_name_sorts_lowercase_with_null_as_empty_and_ties_by_id(backend) {
        let app = TestApp::spawn(backend).await;
        let u = five_users(&app).await;
        // Names: c=NULL(""), "Alice Adams"(u1) = "alice adams"(u3) tie, "bob Brown"(u0), "Eve"(u4).
        let asc = ids(&list(&app, "sort=full_name&created_before=2026-01-01T00:00:00Z").await);
        assert_eq!(asc, [u[2], u[1], u[3], u[0], u[4]]);
        let desc = ids(&list(&app, "sort=-full_name&created_before=2026-01-01T00:00:00Z").await);
        assert_eq!(desc, [u[4], u[0], u[3], u[1], u[2]]);
    }

    async fn id_sorts_both_ways(backend) {
        let app = TestApp::spawn(backend).await;
        let u = five_users(&app).await;
        assert_eq!(ids(&list(&app, "sort=id&created_before=2026-01-01T00:00:00Z").await), u);
        let mut rev = u.clone();
        rev.reverse();
        assert_eq!(ids(&list(&app, "sort=-id&created_before=2026-01-01T00:00:00Z").await), rev);
    }

    async fn list_items_are_full_user_objects_without_secrets(backend) {
        let app = TestApp::spawn(backend).await;
        five_users(&app).await;
        let page = list(&app, "").await;
        for item in page["items"].as_array().unwrap() {
            assert_eq!(item.as_object().unwrap().len(), 8);
            assert!(item["email_verified"].is_boolean());
            assert!(item.get("hashed_password").is_none());
            assert!(DateTime::parse_from_rfc3339(item["created_at"].as_str().unwrap()).is_ok());
        }
        let seeded = page["items"].as_array().unwrap().iter().find(|u| u["email"] == "e.eve@example.com").unwrap();
        assert_eq!(DateTime::parse_from_rfc3339(seeded["created_at"].as_str().unwrap()).unwrap(), at("2025-01-04T12:30:00Z"));
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The trigram index stays in step with the table.
mod search_index {
    use super::*;

    backend_tests! {
        async fn search_follows_every_kind_of_write(backend) {
            let app = TestApp::spawn(backend).await;
            let id = app.create_user("findme@example.com", "password-123", false).await["id"].as_i64().unwrap();
            assert_eq!(emails(&list(&app, "search=findme").await), ["findme@example.com"]);
            app.patch(&format!("/api/v1/users/{id}"), Some(app.admin()), serde_json::json!({"full_name": "Quixotic Name", "email": "moved@example.com"})).await;
            assert_eq!(list(&app, "search=findme").await["total"], 0);
            assert_eq!(emails(&list(&app, "search=quixotic").await), ["moved@example.com"]);
            assert_eq!(emails(&list(&app, "search=moved@").await), ["moved@example.com"]);
            let bulk: Vec<Value> = (0..3).map(|i| serde_json::json!({"email": format!("batch{i}@example.com"), "password": "password-123", "full_name": "Zebra Crossing"})).collect();
            assert_eq!(app.post("/api/v1/users/bulk", Some(app.admin()), serde_json::json!({"users": bulk})).await.status, 201);
            assert_eq!(list(&app, "search=zebra%20cross").await["total"], 3);
            app.delete(&format!("/api/v1/users/{id}"), Some(app.admin())).await;
            assert_eq!(list(&app, "search=quixotic").await["total"], 0);
            let single = app.create_user("after-bulk@example.com", "password-123", false).await;
            assert_eq!(ids(&list(&app, "search=after-bulk").await), [single["id"].as_i64().unwrap()]);
        }

        async fn short_and_long_search_terms_agree_with_the_substring_rule(backend) {
            let app = TestApp::spawn(backend).await;
            five_users(&app).await;
            for (term, expected) in [("a", 6), ("ad", 2), ("ada", 2), ("adam", 2), ("A.ADAMS", 1), ("@EXAMPLE.COM", 6), ("bob brown", 1), ("xyz", 0)] {
                assert_eq!(list(&app, &format!("search={}", urlencode(term))).await["total"], expected, "{term}");
            }
        }
    }
}

/// Input no stored value can hold is an empty result, never an error.
mod hostile_search {
    use super::*;

    backend_tests! {
        async fn search_terms_with_nul_or_control_characters_match_nothing(backend) {
            let app = TestApp::spawn(backend).await;
            five_users(&app).await;
            for term in ["\u{0}", "ada\u{0}ms", "\u{80}\u{24011}\u{1b}\u{0}\u{f5fc9}", "\u{1b}[31m"] {
                let r = app.get(&format!("/api/v1/users?search={}", urlencode(term)), Some(app.admin())).await;
                assert_eq!(r.status, 200, "{term:?}: {}", r.text);
                assert_eq!(r.body["total"], 0, "{term:?}");
                let export = app.get(&format!("/api/v1/users/export?format=ndjson&search={}", urlencode(term)), Some(app.admin())).await;
                assert_eq!((export.status, export.text.as_str()), (200, ""));
            }
        }

        async fn names_with_control_characters_are_422_not_500(backend) {
            let app = TestApp::spawn(backend).await;
            let r = app.post("/api/v1/users", Some(app.admin()), serde_json::json!({"email": "nul@example.com", "password": "password-123", "full_name": "a\u{0}b"})).await;
            r.assert_error(422, "validation_error");
            assert_eq!(r.error_fields(), ["full_name"]);
        }
    }
}

mod cursor_paging {
    use std::collections::HashSet;

    use serde_json::{Value, json};

    use super::ids;
    use crate::helpers::{TestApp, backend_tests};

    const SORTS: [&str; 8] = [
        "created_at",
        "-created_at",
        "email",
        "-email",
        "full_name",
        "-full_name",
        "id",
        "-id",
    ];

    async fn people(app: &TestApp) {
        let names = [
            Some("bea"),
            Some("Ann"),
            None,
            Some("ann"),
            Some("Zoë"),
            Some("émile"),
            Some("bea"),
            None,
            Some("Carl"),
            Some("dora"),
        ];
        let users: Vec<Value> = names
            .iter()
            .enumerate()
            .map(|(i, n)| json!({"email": format!("P{}{}@example.com", (b'a' + (i as u8 * 7) % 26) as char, i), "password": "k7#Qm2!xz", "full_name": n, "is_active": i % 3 != 0}))
            .collect();
        // One bulk: every created_at is equal, so ties are broken by id.
        let r = app
            .post(
                "/api/v1/users/bulk",
                Some(app.admin()),
                json!({"users": users}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        app.create_user("later@example.com", "k7#Qm2!xz", false)
            .await;
    }

    async fn get(app: &TestApp, query: &str) -> Value {
        let r = app
            .get(&format!("/api/v1/users?{query}"), Some(app.admin()))
            .await;
        assert_eq!(r.status, 200, "{query}: {}", r.text);
        r.body
    }

    fn cursor_arg(cursor: &str) -> String {
        cursor.replace('.', "%2E")
    }

    backend_tests! {
        async fn cursor_pages_walk_every_sort_as_offset_pages_do(backend) {
            let app = TestApp::spawn(backend).await;
            people(&app).await;
            for sort in SORTS {
                for filter in ["", "&is_active=true"] {
                    let mut by_offset = Vec::new();
                    for page in 1..=5 {
                        by_offset.extend(ids(&get(&app, &format!("size=3&page={page}&sort={sort}{filter}")).await));
                    }
                    let first = get(&app, &format!("size=3&sort={sort}{filter}")).await;
                    assert!(first["total"].is_u64() && first["next_cursor"].is_string(), "offset pages carry next_cursor: {first}");
                    let mut by_cursor = ids(&first);
                    let mut next = first["next_cursor"].clone();
                    while let Some(cursor) = next.as_str() {
                        let page = get(&app, &format!("size=3&sort={sort}{filter}&cursor={}", cursor_arg(cursor))).await;
                        assert!(page.get("total").is_none() && page.get("page").is_none() && page.get("pages").is_none(), "{page}");
                        assert_eq!(page["size"], 3);
                        by_cursor.extend(ids(&page));
                        next = page["next_cursor"].clone();
                    }
                    assert_eq!(by_cursor, by_offset, "sort={sort}{filter}");
                }
            }
        }

        async fn tampered_foreign_and_mixed_cursors_are_422(backend) {
            let app = TestApp::spawn(backend).await;
            people(&app).await;
            let cursor = get(&app, "size=2&sort=email").await["next_cursor"].as_str().unwrap().to_string();
            let mut tampered = cursor.clone().into_bytes();
            tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(tampered).unwrap();
            for query in [
                format!("size=2&sort=email&cursor={}", cursor_arg(&tampered)),
                format!("size=2&sort=-email&cursor={}", cursor_arg(&cursor)),
                format!("size=2&sort=email&is_active=true&cursor={}", cursor_arg(&cursor)),
                "size=2&sort=email&cursor=garbage".to_string(),
                format!("size=2&sort=email&page=2&cursor={}", cursor_arg(&cursor)),
            ] {
                let r = app.get(&format!("/api/v1/users?{query}"), Some(app.admin())).await;
                r.assert_error(422, "validation_error");
                assert_eq!(r.error_fields(), ["cursor"], "{query}");
            }
            // The genuine cursor works; a different page size with it is fine.
            assert_eq!(get(&app, &format!("size=5&sort=email&cursor={}", cursor_arg(&cursor))).await["items"].as_array().unwrap().len(), 5);
        }

        async fn a_cursor_page_counts_only_when_asked(backend) {
            let app = TestApp::spawn(backend).await;
            people(&app).await;
            for filter in ["", "&is_active=false", "&search=example"] {
                let first = get(&app, &format!("size=2{filter}")).await;
                let cursor = cursor_arg(first["next_cursor"].as_str().unwrap());
                let counted = get(&app, &format!("size=2{filter}&cursor={cursor}&include_total=true")).await;
                assert_eq!(counted["total"], first["total"], "{filter}");
                assert!(get(&app, &format!("size=2{filter}&cursor={cursor}")).await.get("total").is_none());
            }
        }

        async fn writes_during_a_walk_neither_skip_nor_repeat_rows_that_stay(backend) {
            let app = TestApp::spawn(backend).await;
            people(&app).await;
            let all: HashSet<i64> = ids(&get(&app, "size=100").await).into_iter().collect();
            let mut seen = Vec::new();
            let mut deleted = HashSet::new();
            let mut page = get(&app, "size=3&sort=full_name").await;
            let mut round = 0;
            loop {
                seen.extend(ids(&page));
                // Between pages: a new user, and one not yet seen deleted.
                app.create_user(&format!("new{round}@example.com"), "k7#Qm2!xz", false).await;
                if let Some(victim) = all.iter().find(|id| !seen.contains(id) && !deleted.contains(*id) && **id != 1) {
                    assert_eq!(app.delete(&format!("/api/v1/users/{victim}"), Some(app.admin())).await.status, 204);
                    deleted.insert(*victim);
                }
                round += 1;
                let Some(cursor) = page["next_cursor"].as_str() else { break };
                page = get(&app, &format!("size=3&sort=full_name&cursor={}", cursor_arg(cursor))).await;
            }
            let stayed: HashSet<i64> = all.difference(&deleted).copied().collect();
            for id in &stayed {
                assert_eq!(seen.iter().filter(|s| *s == id).count(), 1, "user {id} of the whole walk");
            }
            assert_eq!(seen.len(), seen.iter().collect::<HashSet<_>>().len(), "nothing repeated");
        }
    }
}

mod export_cursor {
    use crate::helpers::{TestApp, backend_tests};

    backend_tests! {
        async fn an_export_continues_after_a_list_pages_cursor(backend) {
            let app = TestApp::spawn(backend).await;
            for i in 0..7 {
                app.create_user(&format!("x{i}@example.com"), "k7#Qm2!xz", false).await;
            }
            let first = app.get("/api/v1/users?size=3&sort=email", Some(app.admin())).await.body;
            let cursor = first["next_cursor"].as_str().unwrap();
            let rest = app.get(&format!("/api/v1/users/export?format=ndjson&sort=email&cursor={cursor}"), Some(app.admin())).await;
            assert_eq!(rest.status, 200, "{}", rest.text);
            let exported: Vec<i64> = rest.text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_i64().unwrap()).collect();
            let all = app.get("/api/v1/users?size=100&sort=email", Some(app.admin())).await.body;
            let expected: Vec<i64> = all["items"].as_array().unwrap()[3..].iter().map(|u| u["id"].as_i64().unwrap()).collect();
            assert_eq!(exported, expected);
            let foreign = app.get(&format!("/api/v1/users/export?sort=-email&cursor={cursor}"), Some(app.admin())).await;
            foreign.assert_error(422, "validation_error");
        }
    }
}
