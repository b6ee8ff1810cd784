//! The API's route templates, read from its own OpenAPI document: paths become templates
//! for metrics labels (never raw ids), and a path's methods become the `Allow` of a 405.

use std::collections::HashMap;

enum Segment {
    Literal(String),
    Param,
}

struct Route {
    segments: Vec<Segment>,
    methods: Vec<String>,
}

/// A path's metrics label, as an index into the table's templates: cheap to compare and
/// hash, so `metrics.rs` keeps one set of handles per label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RouteLabel(usize);

/// Labels that are not an API route of the OpenAPI document; API routes follow them.
const SPECIAL_LABELS: [&str; 4] = ["unmatched", "/docs", "/openapi.json", "/admin"];
const UNMATCHED: RouteLabel = RouteLabel(0);
const DOCS: RouteLabel = RouteLabel(1);
const OPENAPI: RouteLabel = RouteLabel(2);
const ADMIN: RouteLabel = RouteLabel(3);

/// No API path has more segments; longer paths are unmatched without a closer look.
const MAX_SEGMENTS: usize = 16;

impl Route {
    fn template(&self) -> String {
        if self.segments.is_empty() {
            return "/".into();
        }
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => format!("/{l}"),
                Segment::Param => "/{id}".into(),
            })
            .collect()
    }
}

pub struct RouteTable {
    routes: Vec<Route>,
    /// `SPECIAL_LABELS`, then each route's template (`/api/v1/users/{id}`).
    templates: Vec<String>,
    /// The routes without parameters by their exact path: most requests are found here
    /// without walking the table.
    exact: HashMap<String, usize>,
}

impl RouteTable {
    pub fn from_spec(spec: &str) -> Self {
        let doc: serde_json::Value = serde_json::from_str(spec).unwrap_or_default();
        let routes: Vec<Route> = doc
            .get("paths")
            .and_then(|p| p.as_object())
            .map(|paths| {
                paths
                    .iter()
                    .map(|(path, ops)| Route {
                        segments: path
                            .split('/')
                            .filter(|s| !s.is_empty())
                            .map(|s| {
                                if s.starts_with('{') {
                                    Segment::Param
                                } else {
                                    Segment::Literal(s.to_string())
                                }
                            })
                            .collect(),
                        methods: ops
                            .as_object()
                            .map(|o| o.keys().map(|m| m.to_ascii_uppercase()).collect())
                            .unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let templates = SPECIAL_LABELS
            .iter()
            .map(|label| label.to_string())
            .chain(routes.iter().map(Route::template))
            .collect();
        let exact = routes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.segments.iter().all(|s| matches!(s, Segment::Literal(_))))
            .map(|(index, r)| (r.template(), index))
            .collect();
        Self {
            routes,
            templates,
            exact,
        }
    }

    /// The index of the route serving `path`; literal segments win over parameters
    /// (`/users/me`). Runs for every request, so it allocates nothing.
    fn find(&self, path: &str) -> Option<usize> {
        if let Some(&index) = self.exact.get(path) {
            return Some(index);
        }
        let mut parts = [""; MAX_SEGMENTS];
        let mut count = 0;
        for part in path.split('/').filter(|s| !s.is_empty()) {
            *parts.get_mut(count)? = part;
            count += 1;
        }
        let parts = &parts[..count];
        self.routes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.segments.len() == parts.len())
            .filter(|(_, r)| {
                r.segments.iter().zip(parts).all(|(seg, part)| match seg {
                    Segment::Literal(l) => l == part,
                    Segment::Param => true,
                })
            })
            .max_by_key(|(_, r)| {
                r.segments
                    .iter()
                    .filter(|s| matches!(s, Segment::Literal(_)))
                    .count()
            })
            .map(|(index, _)| index)
    }

    /// The label of `path`: its route, `/docs`, `/openapi.json`, `/admin`, or `unmatched`.
    pub fn label_of(&self, path: &str) -> RouteLabel {
        if path == "/docs" || path.starts_with("/docs/") {
            return DOCS;
        }
        if path == "/openapi.json" {
            return OPENAPI;
        }
        // The admin console: one label for all its pages (its paths carry ids).
        if path == "/admin" || path.starts_with("/admin/") {
            return ADMIN;
        }
        self.find(path)
            .map_or(UNMATCHED, |index| RouteLabel(SPECIAL_LABELS.len() + index))
    }

    /// The text of a label from `label_of`.
    pub fn template(&self, label: RouteLabel) -> &str {
        self.templates
            .get(label.0)
            .map_or("unmatched", String::as_str)
    }

    /// The `Allow` header value for `path`, when it is a route of the API.
    pub fn allowed_methods(&self, path: &str) -> Option<String> {
        let route = &self.routes[self.find(path)?];
        let mut methods = route.methods.clone();
        if methods.iter().any(|m| m == "GET") {
            methods.push("HEAD".into());
        }
        Some(methods.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        RouteTable::from_spec(
            r#"{"paths": {"/api/v1/users": {"get": {}, "post": {}}, "/api/v1/users/me": {"get": {}, "patch": {}},
                "/api/v1/users/{id}": {"get": {}, "patch": {}, "delete": {}}, "/health": {"get": {}}}}"#,
        )
    }

    fn template_of<'a>(routes: &'a RouteTable, path: &str) -> &'a str {
        routes.template(routes.label_of(path))
    }

    #[test]
    fn paths_become_route_templates() {
        let routes = table();
        assert_eq!(
            template_of(&routes, "/api/v1/users/42"),
            "/api/v1/users/{id}"
        );
        assert_eq!(template_of(&routes, "/api/v1/users/me"), "/api/v1/users/me");
        assert_eq!(template_of(&routes, "/api/v1/users"), "/api/v1/users");
        assert_eq!(template_of(&routes, "/docs/index.css"), "/docs");
        assert_eq!(template_of(&routes, "/random/123"), "unmatched");
        assert_eq!(template_of(&routes, "/admin/users/42"), "/admin");
        assert_eq!(template_of(&routes, &"/a".repeat(40)), "unmatched");
        assert_eq!(
            routes.label_of("/api/v1/users/7"),
            routes.label_of("/api/v1/users/8")
        );
        // Found exactly or by walking the table, a path gets the same label.
        assert_eq!(template_of(&routes, "/api/v1/users/"), "/api/v1/users");
        assert_eq!(
            template_of(&routes, "//api/v1/users/me"),
            "/api/v1/users/me"
        );
        assert_eq!(template_of(&routes, "/health"), "/health");
    }

    #[test]
    fn allow_lists_the_methods_of_the_path() {
        let routes = table();
        assert_eq!(
            routes.allowed_methods("/api/v1/users").as_deref(),
            Some("GET, POST, HEAD")
        );
        assert_eq!(
            routes.allowed_methods("/api/v1/users/me").as_deref(),
            Some("GET, PATCH, HEAD")
        );
        assert_eq!(routes.allowed_methods("/nope"), None);
    }
}
