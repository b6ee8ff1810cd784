//! The list page, and a single user, written straight to JSON by serde. `Json<UserPage>`
//! first builds a `serde_json::Value` of every user (a map and a string per field, dates
//! formatted into new strings), then writes that tree: at 50 users a page this was the
//! largest cost of a list request after the query itself. This writes the same bytes from
//! the users as they are; the document still describes the responses as `UserPage` and
//! `UserOut`, and tests hold the encodings equal. A single user's bytes also give its
//! `ETag`, which was a second encoding of its own.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use poem::{IntoResponse, Response};
use poem_openapi::{
    ApiResponse,
    payload::{Json, Payload},
    registry::{MetaResponses, MetaSchemaRef, Registry},
};
use serde::{Serialize, Serializer};

use super::dto::{UserOut, UserPage};
use crate::{domain::User, error::ApiError, service::ListPage};

pub struct UserPageJson(pub ListPage);

/// As poem-openapi writes a `DateTime<Utc>`.
fn rfc3339<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&at.to_rfc3339())
}

/// Field for field, in order, a `UserOut`.
#[derive(Serialize)]
struct UserView<'a> {
    id: i64,
    email: &'a str,
    full_name: Option<&'a str>,
    is_active: bool,
    is_superuser: bool,
    email_verified: bool,
    #[serde(serialize_with = "rfc3339")]
    created_at: &'a DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    updated_at: &'a DateTime<Utc>,
}

impl<'a> From<&'a User> for UserView<'a> {
    fn from(u: &'a User) -> Self {
        Self {
            id: u.id,
            email: &u.email,
            full_name: u.full_name.as_deref(),
            is_active: u.is_active,
            is_superuser: u.is_superuser,
            email_verified: u.email_verified,
            created_at: &u.created_at,
            updated_at: &u.updated_at,
        }
    }
}

/// Field for field, in order, a `UserPage`.
#[derive(Serialize)]
struct PageView<'a> {
    items: Vec<UserView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    page: Option<u64>,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pages: Option<u64>,
    next_cursor: Option<&'a str>,
}

impl UserPageJson {
    fn bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        let p = &self.0;
        serde_json::to_vec(&PageView {
            items: p.items.iter().map(UserView::from).collect(),
            total: p.total,
            page: p.page,
            size: p.size,
            pages: p.pages,
            next_cursor: p.next_cursor.as_deref(),
        })
    }
}

impl IntoResponse for UserPageJson {
    fn into_response(self) -> Response {
        match self.bytes() {
            Ok(body) => Response::builder()
                .content_type("application/json; charset=utf-8")
                .body(body),
            Err(e) => ApiError::internal(e).into_response(),
        }
    }
}

impl ApiResponse for UserPageJson {
    fn meta() -> MetaResponses {
        Json::<UserPage>::meta()
    }

    fn register(registry: &mut Registry) {
        <Json<UserPage> as ApiResponse>::register(registry);
    }
}

/// One user as `Json<UserOut>` writes it, encoded once.
#[derive(Clone)]
pub struct UserJson(Vec<u8>);

/// Cached users' encodings and `ETag`s, each kept with the `Arc<User>` it was made from.
/// The directory hands out the same `Arc` for a user until it changes, so a cached user is
/// encoded and hashed once instead of per request (≈ 4% of a cached `GET /users/{id}`).
/// Holding the `Arc` makes the identity check sound: the user cannot be freed and another
/// allocated at its address while its slot refers to it. Direct-mapped by id: a slot holds
/// the last user whose id falls on it, so memory stays bounded (`SLOTS` small entries).
pub struct EncodedUsers {
    slots: Box<[Mutex<Option<EncodedSlot>>]>,
}

type EncodedSlot = (Arc<User>, UserJson, String);

impl EncodedUsers {
    const SLOTS: usize = 4096;

    pub fn new() -> Self {
        Self {
            slots: (0..Self::SLOTS).map(|_| Mutex::new(None)).collect(),
        }
    }

    /// `user` encoded, and its `ETag`.
    pub fn get(&self, user: &Arc<User>) -> Result<(UserJson, String), serde_json::Error> {
        let slot = &self.slots[(user.id.unsigned_abs() % Self::SLOTS as u64) as usize];
        if let Ok(held) = slot.lock()
            && let Some((source, json, etag)) = held.as_ref()
            && Arc::ptr_eq(source, user)
        {
            return Ok((json.clone(), etag.clone()));
        }
        let json = UserJson::new(user)?;
        let etag = json.etag();
        if let Ok(mut held) = slot.lock() {
            *held = Some((user.clone(), json.clone(), etag.clone()));
        }
        Ok((json, etag))
    }
}

impl Default for EncodedUsers {
    fn default() -> Self {
        Self::new()
    }
}

impl UserJson {
    pub fn new(user: &User) -> Result<Self, serde_json::Error> {
        serde_json::to_vec(&UserView::from(user)).map(Self)
    }

    /// A strong validator of exactly this representation.
    pub fn etag(&self) -> String {
        use sha2::{Digest, Sha256};
        format!("\"{}\"", hex::encode(&Sha256::digest(&self.0)[..12]))
    }
}

impl Payload for UserJson {
    const CONTENT_TYPE: &'static str = Json::<UserOut>::CONTENT_TYPE;

    fn check_content_type(content_type: &str) -> bool {
        Json::<UserOut>::check_content_type(content_type)
    }

    fn schema_ref() -> MetaSchemaRef {
        Json::<UserOut>::schema_ref()
    }

    fn register(registry: &mut Registry) {
        <Json<UserOut> as Payload>::register(registry);
    }
}

impl IntoResponse for UserJson {
    fn into_response(self) -> Response {
        Response::builder()
            .content_type(Self::CONTENT_TYPE)
            .body(self.0)
    }
}

impl ApiResponse for UserJson {
    fn meta() -> MetaResponses {
        Json::<UserOut>::meta()
    }

    fn register(registry: &mut Registry) {
        <Json<UserOut> as ApiResponse>::register(registry);
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use poem_openapi::types::ToJSON;

    use super::*;

    fn user(id: i64, name: Option<&str>) -> User {
        let at = Utc.with_ymd_and_hms(2026, 11, 30, 9, 26, 45).unwrap()
            + chrono::Duration::microseconds(391_237 * id);
        User {
            id,
            email: format!("user{id}@example.com"),
            full_name: name.map(str::to_string),
            is_active: id % 2 == 0,
            is_superuser: id == 1,
            created_at: at,
            updated_at: at + chrono::Duration::seconds(id),
            email_verified: id % 3 == 0,
        }
    }

    fn page(total: Option<u64>, cursor: Option<&str>) -> ListPage {
        ListPage {
            items: vec![user(1, Some("Ada \"Quote\" Lovelace ✓")), user(2, None)],
            total,
            page: total.map(|_| 1),
            pages: total.map(|t| t.div_ceil(2)),
            size: 2,
            next_cursor: cursor.map(str::to_string),
        }
    }

    #[test]
    fn writes_the_same_bytes_as_the_documented_type() {
        let cases = [
            page(Some(5), Some("abc")),
            page(None, None),
            page(None, Some("x")),
            ListPage {
                items: Vec::new(),
                ..page(Some(0), None)
            },
        ];
        for case in cases {
            let documented =
                serde_json::to_vec(&UserPage::from(case.clone_page()).to_json()).unwrap();
            assert_eq!(
                String::from_utf8(UserPageJson(case).bytes().unwrap()).unwrap(),
                String::from_utf8(documented).unwrap()
            );
        }
    }

    #[test]
    fn a_user_is_written_as_the_documented_type() {
        let users = [
            user(1, Some("Ada \"Quote\" Lovelace ✓")),
            user(2, None),
            user(3, Some("")),
        ];
        let mut etags = Vec::new();
        for user in &users {
            let documented = UserOut::from(user);
            let written = UserJson::new(user).unwrap();
            assert_eq!(
                String::from_utf8(written.0.clone()).unwrap(),
                documented.to_json_string()
            );
            // A strong validator: the same for the same representation, another for another.
            assert_eq!(written.etag(), UserJson::new(user).unwrap().etag());
            etags.push(written.etag());
        }
        let mut renamed = users[2].clone();
        renamed.full_name = Some("Grace".into());
        etags.push(UserJson::new(&renamed).unwrap().etag());
        let distinct: std::collections::HashSet<_> = etags.iter().collect();
        assert_eq!(distinct.len(), etags.len(), "{etags:?}");
    }

    impl ListPage {
        fn clone_page(&self) -> ListPage {
            ListPage {
                items: self.items.clone(),
                total: self.total,
                page: self.page,
                pages: self.pages,
                size: self.size,
                next_cursor: self.next_cursor.clone(),
            }
        }
    }

    #[test]
    fn encoded_users_follow_the_arc_they_were_made_from() {
        let memo = EncodedUsers::new();
        let first = Arc::new(user(7, Some("Ada")));
        let (json, etag) = memo.get(&first).unwrap();
        assert_eq!(json.0, UserJson::new(&first).unwrap().0);
        assert_eq!(etag, UserJson::new(&first).unwrap().etag());
        assert_eq!(memo.get(&first).unwrap().1, etag);
        // The user changed: the directory hands out a new Arc, and it is encoded anew.
        let renamed = Arc::new(user(7, Some("Grace")));
        let (json, renamed_etag) = memo.get(&renamed).unwrap();
        assert_ne!(renamed_etag, etag);
        assert_eq!(json.0, UserJson::new(&renamed).unwrap().0);
        // Two ids on one slot take turns, each answered with its own bytes.
        let other = Arc::new(user(7 + EncodedUsers::SLOTS as i64, Some("Linus")));
        assert_eq!(
            memo.get(&other).unwrap().1,
            UserJson::new(&other).unwrap().etag()
        );
        assert_eq!(memo.get(&renamed).unwrap().1, renamed_etag);
    }
}
