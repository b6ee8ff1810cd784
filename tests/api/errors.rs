//! Every failure, from every layer, leaves as the SPEC's JSON error body.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{TestApp, backend_tests};

backend_tests! {
    async fn unparsable_json_is_400_bad_request(backend) {
        let app = TestApp::spawn(backend).await;
        let req = app.client.post(app.url("/api/v1/users")).bearer_auth(app.admin())
            .header("content-type", "application/json").body("{\"email\": ");
        app.send_raw(req).await.assert_error(400, "bad_request");
        let empty = app.client.post(app.url("/api/v1/auth/login")).header("content-type", "application/json");
        app.send_raw(empty).await.assert_error(400, "bad_request");
    }

    async fn wrong_types_and_missing_fields_are_422_naming_each_field(backend) {
        let app = TestApp::spawn(backend).await;
        let r = app.post("/api/v1/users", Some(app.admin()), json!({"email": 5, "is_active": "yes"})).await;
        r.assert_error(422, "validation_error");
        let mut fields = r.error_fields();
        fields.sort();
        assert_eq!(fields, ["email", "is_active", "password"]);
        let r = app.post("/api/v1/users", Some(app.admin()), json!(["not", "an", "object"])).await;
        r.assert_error(422, "validation_error");
        assert_eq!(r.error_fields(), ["body"]);
        let r = app.post("/api/v1/auth/login", None, json!({"email": null, "password": "x"})).await;
        r.assert_error(422, "validation_error");
        assert_eq!(r.error_fields(), ["email"]);
    }

    async fn a_non_json_content_type_is_415(backend) {
        let app = TestApp::spawn(backend).await;
        let req = app.client.post(app.url("/api/v1/auth/login")).header("content-type", "text/plain").body("{}");
        app.send_raw(req).await.assert_error(415, "unsupported_media_type");
        let form = app.client.post(app.url("/api/v1/auth/login")).form(&[("email", "a@b.co")]);
        app.send_raw(form).await.assert_error(415, "unsupported_media_type");
    }

    async fn unknown_routes_are_404_json(backend) {
        let app = TestApp::spawn(backend).await;
        app.get("/nope", None).await.assert_error(404, "not_found");
        app.get("/api/v1/users/1/extra", Some(app.admin())).await.assert_error(404, "not_found");
    }

    async fn methods_a_path_does_not_serve_are_405_json(backend) {
        let app = TestApp::spawn(backend).await;
        for method in [Method::PUT, Method::TRACE, Method::from_bytes(b"BREW").unwrap()] {
            app.send(method, "/api/v1/users", Some(app.admin()), None).await.assert_error(405, "method_not_allowed");
        }
        app.send(Method::DELETE, "/health", None, None).await.assert_error(405, "method_not_allowed");
    }

    async fn a_non_integer_path_id_is_422(backend) {
        let app = TestApp::spawn(backend).await;
        let r = app.get("/api/v1/users/abc", Some(app.admin())).await;
        r.assert_error(422, "validation_error");
        assert_eq!(r.error_fields(), ["id"]);
        app.get("/api/v1/users/99999999999999999999999", Some(app.admin())).await.assert_error(422, "validation_error");
    }

    async fn a_valid_client_request_id_is_echoed_and_an_invalid_one_replaced(backend) {
        let app = TestApp::spawn(backend).await;
        let req = app.client.get(app.url("/nope")).header("x-request-id", "trace-abc.123_X");
        let r = app.send_raw(req).await;
        assert_eq!(r.header("x-request-id"), Some("trace-abc.123_X"));
        assert_eq!(r.body["request_id"], "trace-abc.123_X");
        let req = app.client.get(app.url("/health/live")).header("x-request-id", "bad id with spaces");
        let r = app.send_raw(req).await;
        let id = r.header("x-request-id").unwrap();
        assert_ne!(id, "bad id with spaces");
        assert!(!id.is_empty());
        let req = app.client.get(app.url("/health/live")).header("x-request-id", "a".repeat(129));
        assert_ne!(app.send_raw(req).await.header("x-request-id").map(str::len), Some(129));
    }

    async fn successful_responses_carry_a_request_id(backend) {
        let app = TestApp::spawn(backend).await;
        let r = app.get("/api/v1/users/me", Some(app.admin())).await;
        assert_eq!(r.status, 200);
        assert!(r.header("x-request-id").is_some_and(|id| !id.is_empty()));
    }
}

mod strict_types {
    use reqwest::Method;
    use serde_json::json;

    use crate::helpers::{TestApp, backend_tests};

    /// The string fields of a body schema (`$ref` resolved), with the path a client writes them
    /// at: top-level fields, and the fields of the items of a top-level list (`users[0].email`).
    fn string_fields(
        spec: &serde_json::Value,
        schema: &serde_json::Value,
    ) -> Vec<(Vec<String>, String)> {
        let resolve = |s: &serde_json::Value| -> serde_json::Value {
            match s["$ref"].as_str() {
                Some(r) => spec["components"]["schemas"][r.rsplit('/').next().unwrap()].clone(),
                None => s.clone(),
            }
        };
        let schema = resolve(schema);
        let mut out = Vec::new();
        for (name, prop) in schema["properties"].as_object().into_iter().flatten() {
            let prop = resolve(prop);
            let ty = prop["type"]
                .as_str()
                .or_else(|| prop["allOf"][0]["type"].as_str());
            match ty {
                Some("string") => out.push((vec![name.clone()], name.clone())),
                Some("array") => {
                    let item = resolve(&prop["items"]);
                    for (inner, prop) in item["properties"].as_object().into_iter().flatten() {
                        if resolve(prop)["type"] == "string" {
                            out.push((
                                vec![name.clone(), "0".into(), inner.clone()],
                                inner.clone(),
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }

    backend_tests! {
        async fn every_string_field_of_every_body_refuses_other_json_types(backend) {
            let app = TestApp::spawn(backend).await;
            let spec: serde_json::Value = serde_json::from_str(&roster::api::spec_json()).unwrap();
            let me = app.get("/api/v1/users/me", Some(app.admin())).await.body["id"].as_i64().unwrap();
            let mut checked = 0;
            for (path, ops) in spec["paths"].as_object().unwrap() {
                for (method, op) in ops.as_object().unwrap() {
                    let schema = &op["requestBody"]["content"]["application/json; charset=utf-8"]["schema"];
                    if schema.is_null() {
                        continue;
                    }
                    let url = path.replace("{id}", &me.to_string()).replace("{session_id}", "x");
                    let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                    for (at, field) in string_fields(&spec, schema) {
                        for wrong in [json!(12345678), json!(true), json!(["a"]), json!({"a": "b"})] {
                            let mut body = json!({});
                            let mut slot = &mut body;
                            for (i, key) in at.iter().enumerate() {
                                if key == "0" {
                                    *slot = json!([{}]);
                                    slot = &mut slot[0];
                                } else if i + 1 == at.len() {
                                    slot[key.as_str()] = wrong.clone();
                                } else {
                                    slot = &mut slot[key.as_str()];
                                }
                            }
                            let r = app.send(method.clone(), &url, Some(app.admin()), Some(body.clone())).await;
                            r.assert_error(422, "validation_error");
                            assert!(r.error_fields().contains(&field), "{method} {url} {body}: {}", r.text);
                            checked += 1;
                        }
                    }
                }
            }
            assert!(checked >= 60, "only {checked} field checks: the walk missed bodies");
            // Nothing was written by any of them.
            assert_eq!(app.store.count_users().await.unwrap(), 1);
        }
    }
}
