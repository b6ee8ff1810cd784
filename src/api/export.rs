//! Encoding an export stream as CSV (RFC 4180) or NDJSON, chunk by chunk.

use poem::{Body, IntoResponse, Response};
use poem_openapi::{
    ApiResponse,
    registry::{
        MetaHeader, MetaMediaType, MetaResponse, MetaResponses, MetaSchema, MetaSchemaRef, Registry,
    },
    types::{ToJSON, Type},
};

use super::dto::{ExportFormat, UserOut};
use crate::{domain::User, service::UserChunks};

const CSV_CONTENT_TYPE: &str = "text/csv; charset=utf-8";
const NDJSON_CONTENT_TYPE: &str = "application/x-ndjson";

/// A streamed export; one 200 response with two possible media types.
pub struct ExportFile {
    format: ExportFormat,
    body: Body,
}

impl ExportFile {
    pub fn new(chunks: UserChunks, format: ExportFormat) -> Self {
        Self {
            format,
            body: body(chunks, format),
        }
    }
}

impl IntoResponse for ExportFile {
    fn into_response(self) -> Response {
        let (content_type, extension) = match self.format {
            ExportFormat::Csv => (CSV_CONTENT_TYPE, "csv"),
            ExportFormat::Ndjson => (NDJSON_CONTENT_TYPE, "ndjson"),
        };
        let filename = format!(
            "users-{}.{extension}",
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
        );
        Response::builder()
            .content_type(content_type)
            .header(
                "content-disposition",
                format!("attachment; filename=\"{filename}\""),
            )
            .body(self.body)
    }
}

impl ApiResponse for ExportFile {
    fn meta() -> MetaResponses {
        // Text, not `binary`: generated clients then hand back a string (a `binary` text
        // body makes openapi-python-client wrap `response.text` in a bytes buffer, which fails).
        let text = || MetaSchemaRef::Inline(Box::new(MetaSchema::new("string")));
        MetaResponses {
            responses: vec![MetaResponse {
                description: "The matching users: CSV with a header row, or one User JSON object per line.",
                status: Some(200),
                status_range: None,
                content: vec![
                    MetaMediaType {
                        content_type: CSV_CONTENT_TYPE,
                        schema: text(),
                    },
                    MetaMediaType {
                        content_type: NDJSON_CONTENT_TYPE,
                        schema: text(),
                    },
                ],
                headers: vec![MetaHeader {
                    name: "Content-Disposition".into(),
                    description: Some(
                        "`attachment; filename=\"users-<UTC time>.csv\"` (or `.ndjson`).".into(),
                    ),
                    required: true,
                    deprecated: false,
                    schema: String::schema_ref(),
                }],
            }],
        }
    }

    fn register(_registry: &mut Registry) {}
}

pub const CSV_HEADER: [&str; 7] = [
    "id",
    "email",
    "full_name",
    "is_active",
    "is_superuser",
    "created_at",
    "updated_at",
];

fn csv_writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new())
}

fn encode_csv(users: &[User], with_header: bool) -> Result<Vec<u8>, csv::Error> {
    let mut writer = csv_writer();
    if with_header {
        writer.write_record(CSV_HEADER)?;
    }
    for u in users {
        writer.write_record([
            u.id.to_string().as_str(),
            &neutralise(&u.email),
            &neutralise(u.full_name.as_deref().unwrap_or("")),
            if u.is_active { "true" } else { "false" },
            if u.is_superuser { "true" } else { "false" },
            &u.created_at.to_rfc3339(),
            &u.updated_at.to_rfc3339(),
        ])?;
    }
    writer.into_inner().map_err(|e| e.into_error().into())
}

/// A cell a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab, CR first) gets a
/// leading `'`, so it is shown as text (OWASP "CSV injection").
fn neutralise(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}").into()
    } else {
        cell.into()
    }
}

fn encode_ndjson(users: &[User]) -> Vec<u8> {
    let mut out = Vec::with_capacity(users.len() * 200);
    for u in users {
        out.extend_from_slice(UserOut::from(u).to_json_string().as_bytes());
        out.push(b'\n');
    }
    out
}

/// The response body: produced as the client reads, so memory stays bounded by a few
/// chunks whatever the number of rows. A failure mid-way aborts the response rather than
/// ending it as if complete.
fn body(chunks: UserChunks, format: ExportFormat) -> Body {
    let header = match format {
        ExportFormat::Csv => encode_csv(&[], true).ok(),
        ExportFormat::Ndjson => None,
    };
    let rows = futures_util::stream::unfold(chunks, move |mut chunks| async move {
        let item = match chunks.recv().await? {
            Ok(users) => match format {
                ExportFormat::Csv => encode_csv(&users, false).map_err(std::io::Error::other),
                ExportFormat::Ndjson => Ok(encode_ndjson(&users)),
            },
            Err(e) => {
                tracing::error!(error = %e, "export aborted");
                Err(std::io::Error::other("export aborted"))
            }
        };
        Some((item, chunks))
    });
    let stream = futures_util::StreamExt::chain(futures_util::stream::iter(header.map(Ok)), rows);
    Body::from_bytes_stream(stream)
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::*;

    fn user(name: Option<&str>) -> User {
        let t = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456Z")
            .unwrap()
            .to_utc();
        User {
            id: 7,
            email: "a@example.com".into(),
            full_name: name.map(str::to_string),
            is_active: true,
            is_superuser: false,
            email_verified: false,
            created_at: t,
            updated_at: t,
        }
    }

    #[test]
    fn csv_quotes_per_rfc_4180() {
        let bytes = encode_csv(&[user(Some("Doe, \"JD\"\nJr")), user(None)], true).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(
            text,
            "id,email,full_name,is_active,is_superuser,created_at,updated_at\r\n\
             7,a@example.com,\"Doe, \"\"JD\"\"\nJr\",true,false,2026-01-02T03:04:05.123456+00:00,2026-01-02T03:04:05.123456+00:00\r\n\
             7,a@example.com,,true,false,2026-01-02T03:04:05.123456+00:00,2026-01-02T03:04:05.123456+00:00\r\n"
        );
    }

    #[test]
    fn ndjson_is_one_user_object_per_line() {
        let text = String::from_utf8(encode_ndjson(&[user(None), user(Some("B"))])).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let v: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(v["full_name"], "B");
        assert_eq!(v.as_object().unwrap().len(), 8);
        assert_eq!(v["email_verified"], false);
    }
}
