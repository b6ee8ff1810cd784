//! `JsonBody<T>`: a JSON request body whose failures say which field broke which rule.
//!
//! poem-openapi's own `Json<T>` reports malformed JSON and a wrong shape as the same
//! error, without naming the field, and coerces numbers and booleans into strings; SPEC
//! wants 400 for the first, 422 with `{field, message}` details for the second, and strict
//! types.

use poem::{FromRequest, Request, RequestBody, Result};
use poem_openapi::{
    impl_apirequest_for_payload,
    payload::{ParsePayload, Payload},
    registry::{MetaSchema, MetaSchemaRef, Registry},
    types::{ParseFromJSON, Type},
};
use serde_json::Value;

use crate::{
    domain::FieldError,
    error::{ApiError, ErrorCode},
};

pub struct JsonBody<T>(pub T);

impl<T> std::ops::Deref for JsonBody<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Type> Payload for JsonBody<T> {
    const CONTENT_TYPE: &'static str = "application/json; charset=utf-8";

    fn check_content_type(content_type: &str) -> bool {
        matches!(content_type.parse::<mime::Mime>(), Ok(m) if m.type_() == "application"
            && (m.subtype() == "json" || m.suffix().is_some_and(|s| s == "json")))
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: ParseFromJSON> ParsePayload for JsonBody<T> {
    const IS_REQUIRED: bool = true;

    async fn from_request(request: &Request, body: &mut RequestBody) -> Result<Self> {
        let data = Vec::<u8>::from_request(request, body).await?;
        if data.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "The request body is empty; send a JSON object.",
            )
            .into());
        }
        let value: Value = serde_json::from_slice(&data).map_err(|e| {
            ApiError::new(
                ErrorCode::BadRequest,
                format!("The body is not valid JSON: {e}."),
            )
        })?;
        // Types are strict (SPEC): a number or boolean where a string is expected is a
        // wrong type, never coerced, so the schema is checked before poem-openapi parses.
        let mut violations = Vec::new();
        let mut registry = Registry::new();
        T::register(&mut registry);
        check_value(
            &registry,
            &T::schema_ref(),
            &value,
            "",
            None,
            &mut violations,
        );
        if !violations.is_empty() {
            return Err(ApiError::validation(&violations).into());
        }
        match T::parse_from_json(Some(value)) {
            Ok(parsed) => Ok(Self(parsed)),
            Err(err) => {
                Err(ApiError::validation(&[FieldError::new("body", err.into_message())]).into())
            }
        }
    }
}

impl_apirequest_for_payload!(JsonBody<T>, T: ParseFromJSON);

fn resolve<'a>(registry: &'a Registry, schema: &'a MetaSchemaRef) -> Option<&'a MetaSchema> {
    match schema {
        MetaSchemaRef::Inline(inline) => Some(inline),
        MetaSchemaRef::Reference(name) => registry.schemas.get(name),
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// Walks `value` against `schema`, recording each missing field and each wrong JSON type.
/// Inside the items of a top-level list (`{"users": [...]}`) fields are named relative to
/// the item and carry its index, as bulk errors do.
fn check_value(
    registry: &Registry,
    schema: &MetaSchemaRef,
    value: &Value,
    path: &str,
    index: Option<usize>,
    out: &mut Vec<FieldError>,
) {
    let Some(schema) = resolve(registry, schema) else {
        return;
    };
    let push = |out: &mut Vec<FieldError>, field: &str, message: String| {
        let error = FieldError::new(if field.is_empty() { "body" } else { field }, message);
        out.push(match index {
            Some(i) => error.at(i),
            None => error,
        });
    };
    let type_ok = match (schema.ty, value) {
        (_, Value::Null) => true, // nullability is judged by the parent's `required`
        ("object", Value::Object(_))
        | ("array", Value::Array(_))
        | ("string", Value::String(_)) => true,
        ("boolean", Value::Bool(_)) => true,
        ("integer", Value::Number(n)) => n.is_i64() || n.is_u64(),
        ("number", Value::Number(_)) => true,
        ("object" | "array" | "string" | "boolean" | "integer" | "number", _) => false,
        _ => true,
    };
    if !type_ok {
        let article = if schema.ty.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        };
        push(out, path, format!("must be {article} {}", schema.ty));
        return;
    }
    match value {
        Value::Object(map) => {
            for (name, prop) in &schema.properties {
                let required = schema.required.contains(name);
                let field = join(path, name);
                match map.get(*name) {
                    None if required => push(out, &field, "is required".into()),
                    Some(Value::Null) if required => push(out, &field, "must not be null".into()),
                    Some(v) => check_value(registry, prop, v, &field, index, out),
                    None => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = &schema.items {
                let top_level_list =
                    index.is_none() && !path.is_empty() && !path.contains(['.', '[']);
                for (i, item) in items.iter().enumerate() {
                    if top_level_list {
                        check_value(registry, item_schema, item, "", Some(i), out);
                    } else {
                        let item_path = format!("{path}[{i}]");
                        check_value(registry, item_schema, item, &item_path, index, out);
                    }
                }
            }
        }
        _ => {}
    }
}
