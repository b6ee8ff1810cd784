//! The generated OpenAPI document, finished: what poem-openapi cannot say from the types
//! (which errors each operation can answer, what each success means, the shape of an
//! error's `details`) and what client generators need (inline enum parameters).

use serde_json::{Value, json};

/// The document as served at `/openapi.json` and shown at `/docs`.
pub fn normalise(spec: &str) -> String {
    let Ok(mut doc) = serde_json::from_str::<Value>(spec) else {
        return spec.to_string();
    };
    inline_enum_parameters(&mut doc);
    describe_successes(&mut doc);
    keep_possible_errors(&mut doc);
    type_error_details(&mut doc);
    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| spec.to_string())
}

/// Every (method, path, operation) of the document.
fn operations(doc: &mut Value) -> impl Iterator<Item = (String, String, &mut Value)> {
    doc["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|paths| paths.iter_mut())
        .flat_map(|(path, ops)| {
            let path = path.clone();
            ops.as_object_mut()
                .into_iter()
                .flat_map(|ops| ops.iter_mut())
                .map(move |(method, op)| (method.clone(), path.clone(), op))
        })
}

/// poem-openapi writes a parameter of an enum type with a default as
/// `allOf: [{$ref: Enum}, {default: …}]`, which client generators refuse
/// (openapi-python-client: "Cannot take allOf a non-object"; the operation is skipped).
/// Such parameters get the enum inline instead, with its values, description and the
/// default beside them.
fn inline_enum_parameters(doc: &mut Value) {
    let schemas = doc["components"]["schemas"].clone();
    let operations = doc["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(Value::as_object_mut)
        .flat_map(|ops| ops.values_mut());
    for op in operations {
        let Some(params) = op.get_mut("parameters").and_then(|p| p.as_array_mut()) else {
            continue;
        };
        for param in params {
            let schema = &mut param["schema"];
            let target = schema
                .get("allOf")
                .and_then(|parts| parts.as_array())
                .and_then(|parts| {
                    parts.iter().find_map(|p| {
                        p.get("$ref")?
                            .as_str()?
                            .strip_prefix("#/components/schemas/")
                    })
                })
                .and_then(|name| schemas.get(name))
                .filter(|target| target.get("enum").is_some());
            let Some(target) = target else { continue };
            let mut inline = target.clone();
            if let Some(default) = schema.get("default").cloned() {
                inline["default"] = default;
            }
            *schema = inline;
        }
    }
}

/// What a plain `Json<T>` success means, for the operations that return one.
const SUCCESSES: &[(&str, &str)] = &[
    ("login", "A new session's access token and refresh token."),
    ("refresh", "The next pair of tokens of the same session."),
    ("get_me", "Your account."),
    ("update_me", "Your account, as changed."),
    ("list_users", "A page of users."),
    ("update_user", "The user, as changed."),
    ("list_my_sessions", "Your live sessions, newest first."),
    (
        "list_user_sessions",
        "The user's live sessions, newest first.",
    ),
    ("list_audit_events", "A page of events, newest first."),
    ("health_live", "The process is up."),
    (
        "health_ready",
        "The database answers and its schema is current.",
    ),
    ("database_metrics", "The connection pool's figures."),
    ("cache_metrics", "Each cache's figures."),
    ("prometheus_metrics", "Prometheus text exposition."),
];

fn describe_successes(doc: &mut Value) {
    for (_, _, op) in operations(doc) {
        let id = op["operationId"].as_str().unwrap_or_default().to_string();
        let Some(responses) = op["responses"].as_object_mut() else {
            continue;
        };
        for response in responses.values_mut() {
            let empty = response["description"].as_str().is_none_or(str::is_empty);
            if let (true, Some((_, text))) = (empty, SUCCESSES.iter().find(|(op, _)| *op == id)) {
                response["description"] = json!(text);
            }
        }
    }
}

/// Operations that can refuse a change as a conflict (409: a taken email, the last
/// superuser, deleting oneself).
const CONFLICTS: &[&str] = &[
    "register",
    "create_user",
    "bulk_create_users",
    "invite_user",
    "update_user",
    "update_me",
    "delete_user",
];

/// Public operations that still answer 401 or 403 (credentials, an inactive account,
/// registration turned off).
const PUBLIC_REFUSALS: &[(&str, &[&str])] = &[
    ("login", &["401", "403"]),
    ("refresh", &["401", "403"]),
    ("register", &["403"]),
];

/// poem-openapi lists every error of the shared error type on every operation. Each keeps
/// the ones it can answer: 400, 413 and 415 with a body; 401 and 403 with a bearer token
/// (or as listed); 404 with a path parameter; 409 as listed; 422 with any input; 429 but
/// on the health routes; 500, 503 and 504 everywhere. 405 belongs to paths, not operations.
fn keep_possible_errors(doc: &mut Value) {
    for (_, path, op) in operations(doc) {
        let id = op["operationId"].as_str().unwrap_or_default().to_string();
        let has_body = op.get("requestBody").is_some();
        let has_params = op["parameters"].as_array().is_some_and(|p| !p.is_empty());
        let secured = op.get("security").is_some();
        let refusals = PUBLIC_REFUSALS
            .iter()
            .find(|(op, _)| *op == id)
            .map_or(&[][..], |(_, codes)| *codes);
        let possible = |status: &str| match status {
            "400" | "413" | "415" => has_body,
            "401" | "403" => secured || refusals.contains(&status),
            "404" => path.contains('{'),
            "409" => CONFLICTS.contains(&id.as_str()),
            "422" => has_body || has_params,
            "429" => !path.starts_with("/health"),
            "500" | "503" | "504" => true,
            _ => false,
        };
        let Some(responses) = op["responses"].as_object_mut() else {
            continue;
        };
        responses.retain(|status, response| {
            let shared_error = response
                .to_string()
                .contains("#/components/schemas/ErrorBody");
            !shared_error || possible(status)
        });
    }
}

/// `details` is a list of field problems (validation) or an object (`{"emails": [...]}`).
fn type_error_details(doc: &mut Value) {
    let schemas = &mut doc["components"]["schemas"];
    if schemas.get("ErrorBody").is_none() {
        return;
    }
    let description = schemas["ErrorBody"]["properties"]["details"]["description"].clone();
    schemas["ErrorBody"]["properties"]["details"] = json!({
        "description": description,
        "oneOf": [
            {"type": "array", "items": {"$ref": "#/components/schemas/FieldProblem"}},
            {"type": "object", "additionalProperties": true}
        ]
    });
    schemas["FieldProblem"] = json!({
        "type": "object",
        "title": "FieldProblem",
        "description": "One broken rule of the input.",
        "required": ["field", "message"],
        "properties": {
            "field": {"type": "string", "description": "The field, e.g. `email`."},
            "message": {"type": "string", "description": "What is wrong with it."},
            "index": {"type": "integer", "description": "For a bulk create: the item's position, from 0."}
        },
        "example": {"field": "email", "message": "is not a valid email address"}
    });
}
