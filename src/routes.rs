//! The API's route templates, read from its own OpenAPI document: paths become templates
//! for metrics labels (never raw ids), and a path's methods become the `Allow` of a 405.

enum Segment {
    Literal(String),
    Param,
}

struct Route {
    segments: Vec<Segment>,
    methods: Vec<String>,
}

pub struct RouteTable(Vec<Route>);

impl RouteTable {
    pub fn from_spec(spec: &str) -> Self {
        let doc: serde_json::Value = serde_json::from_str(spec).unwrap_or_default();
        let routes = doc
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
        Self(routes)
    }

    /// The route serving `path`; literal segments win over parameters (`/users/me`).
    fn find(&self, path: &str) -> Option<&Route> {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        self.0
            .iter()
            .filter(|r| r.segments.len() == parts.len())
            .filter(|r| {
                r.segments.iter().zip(&parts).all(|(seg, part)| match seg {
                    Segment::Literal(l) => l == part,
                    Segment::Param => true,
                })
            })
            .max_by_key(|r| {
                r.segments
                    .iter()
                    .filter(|s| matches!(s, Segment::Literal(_)))
                    .count()
            })
    }

    /// The template of `path` (`/api/v1/users/{id}`), `/docs`, or `unmatched`.
    pub fn template_of(&self, path: &str) -> String {
        if path == "/docs" || path.starts_with("/docs/") {
            return "/docs".into();
        }
        if path == "/openapi.json" {
            return path.into();
        }
        // The admin console: one label for all its pages (its paths carry ids).
        if path == "/admin" || path.starts_with("/admin/") {
            return "/admin".into();
        }
        match self.find(path) {
            Some(route) if route.segments.is_empty() => "/".into(),
            Some(route) => route
                .segments
                .iter()
                .map(|s| match s {
                    Segment::Literal(l) => format!("/{l}"),
                    Segment::Param => "/{id}".into(),
                })
                .collect(),
            None => "unmatched".into(),
        }
    }

    /// The `Allow` header value for `path`, when it is a route of the API.
    pub fn allowed_methods(&self, path: &str) -> Option<String> {
        let route = self.find(path)?;
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

    #[test]
    fn paths_become_route_templates() {
        let routes = table();
        assert_eq!(routes.template_of("/api/v1/users/42"), "/api/v1/users/{id}");
        assert_eq!(routes.template_of("/api/v1/users/me"), "/api/v1/users/me");
        assert_eq!(routes.template_of("/api/v1/users"), "/api/v1/users");
        assert_eq!(routes.template_of("/docs/index.css"), "/docs");
        assert_eq!(routes.template_of("/random/123"), "unmatched");
        assert_eq!(routes.template_of("/admin/users/42"), "/admin");
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
