//! Opaque list cursors: where the last page ended (its last row's sort key and id), bound to
//! the list's sort and filters and signed, so a cursor cannot be forged, edited, or used on
//! another list. A cursor page costs the same at any depth (keyset paging).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::DateTime;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ServiceError;
use crate::domain::{Keyset, SortField, SortValue, User, UserQuery};

type HmacSha256 = Hmac<Sha256>;

#[derive(Serialize, Deserialize)]
struct Position {
    /// Which list: a digest of its sort and filters.
    l: String,
    /// The sort key: microseconds for times, the folded text, or nothing (sorting by id).
    t: Option<i64>,
    s: Option<String>,
    i: i64,
}

pub struct Cursors {
    key: Vec<u8>,
}

const INVALID: &str = "is not a cursor of this list (cursors come from next_cursor, unchanged, with the same filters and sort)";

impl Cursors {
    /// `secret` is the signing key of the access tokens; cursors get a key of their own
    /// derived from it, so they survive restarts and work on every instance.
    pub fn new(secret: &[u8]) -> Self {
        let mut digest = Sha256::new();
        digest.update(b"roster list cursors\0");
        digest.update(secret);
        Self {
            key: digest.finalize().to_vec(),
        }
    }

    fn list_id(query: &UserQuery) -> String {
        Self::digest(&format!("{:?}|{:?}", query.sort, query.filter))
    }

    fn mac(&self, payload: &[u8]) -> Result<HmacSha256, ServiceError> {
        let mut mac = HmacSha256::new_from_slice(&self.key).map_err(ServiceError::internal)?;
        mac.update(payload);
        Ok(mac)
    }

    /// A cursor after row `id` of a list ordered by id alone (`list` names the list and
    /// its filters).
    pub fn after_id(&self, list: &str, id: i64) -> Result<String, ServiceError> {
        let position = Position {
            l: Self::digest(list),
            t: None,
            s: None,
            i: id,
        };
        self.sign(&position)
    }

    /// The id `cursor` continues after, if it is a cursor of `list`; 422 else.
    pub fn read_id(&self, list: &str, cursor: &str) -> Result<i64, ServiceError> {
        let position = self.open(cursor)?;
        if position.l != Self::digest(list) || position.t.is_some() || position.s.is_some() {
            return Err(ServiceError::invalid("cursor", INVALID));
        }
        Ok(position.i)
    }

    fn digest(list: &str) -> String {
        hex::encode(&Sha256::digest(list.as_bytes())[..8])
    }

    /// The cursor of the page after `last` in `query`'s list.
    pub fn after(&self, query: &UserQuery, last: &User) -> Result<String, ServiceError> {
        let keyset = Keyset::of(last, query.sort.field);
        let (t, s) = match keyset.value {
            SortValue::Time(at) => (Some(at.timestamp_micros()), None),
            SortValue::Text(text) => (None, Some(text)),
            SortValue::Id => (None, None),
        };
        let position = Position {
            l: Self::list_id(query),
            t,
            s,
            i: keyset.id,
        };
        self.sign(&position)
    }

    fn sign(&self, position: &Position) -> Result<String, ServiceError> {
        let payload = serde_json::to_vec(position).map_err(ServiceError::internal)?;
        let tag = self.mac(&payload)?.finalize().into_bytes();
        Ok(format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(tag)
        ))
    }

    /// The signed position of a cursor of this server; 422 on `cursor` for anything else.
    fn open(&self, cursor: &str) -> Result<Position, ServiceError> {
        let invalid = || ServiceError::invalid("cursor", INVALID);
        let (payload, tag) = cursor.split_once('.').ok_or_else(invalid)?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| invalid())?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| invalid())?;
        self.mac(&payload)?
            .verify_slice(&tag)
            .map_err(|_| invalid())?;
        serde_json::from_slice(&payload).map_err(|_| invalid())
    }

    /// Where `cursor` says `query`'s list continues; 422 on `cursor` for anything else.
    pub fn read(&self, query: &UserQuery, cursor: &str) -> Result<Keyset, ServiceError> {
        let invalid = || ServiceError::invalid("cursor", INVALID);
        let position = self.open(cursor)?;
        if position.l != Self::list_id(query) {
            return Err(invalid());
        }
        let value = match (position.t, position.s) {
            (Some(t), None) => {
                SortValue::Time(DateTime::from_timestamp_micros(t).ok_or_else(invalid)?)
            }
            (None, Some(s)) => SortValue::Text(s),
            (None, None) => SortValue::Id,
            _ => return Err(invalid()),
        };
        let fits = matches!(
            (query.sort.field, &value),
            (SortField::CreatedAt, SortValue::Time(_))
                | (SortField::Email | SortField::FullName, SortValue::Text(_))
                | (SortField::Id, SortValue::Id)
        );
        if !fits {
            return Err(invalid());
        }
        Ok(Keyset {
            value,
            id: position.i,
        })
    }
}
