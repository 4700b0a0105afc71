//! The route table: path prefix → registry service id.

use axum::http::Method;

pub struct Route {
    pub prefix: &'static str,
    pub service: &'static str,
    /// Only these methods are routed (None: all).
    pub methods: Option<&'static [Method]>,
}

const READ_ONLY: &[Method] = &[Method::GET, Method::HEAD];

pub const ROUTES: &[Route] = &[
    Route { prefix: "/ws", service: "provider", methods: None },
    Route { prefix: "/session", service: "provider", methods: None },
    Route { prefix: "/quotes", service: "provider", methods: None },
    Route { prefix: "/symbols", service: "provider", methods: None },
    Route { prefix: "/auth", service: "provider", methods: None },
    Route { prefix: "/users", service: "provider", methods: None },
    Route { prefix: "/alerts", service: "provider", methods: None },
    Route { prefix: "/portfolio", service: "provider", methods: None },
    Route { prefix: "/admin", service: "provider", methods: None },
    Route { prefix: "/sources", service: "ingestion", methods: None },
    Route { prefix: "/ingest", service: "ingestion", methods: None },
    // The registry is public read-only: writes go to it directly.
    Route { prefix: "/services", service: "registry", methods: Some(READ_ONLY) },
    Route { prefix: "/slos", service: "registry", methods: None },
];

/// The route whose prefix is the path or a parent of it.
pub fn route_for(path: &str) -> Option<&'static Route> {
    ROUTES.iter().find(|route| {
        path == route.prefix
            || (path.starts_with(route.prefix) && path.as_bytes().get(route.prefix.len()) == Some(&b'/'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_whole_segments() {
        assert_eq!(route_for("/quotes/AAPL").unwrap().service, "provider");
        assert_eq!(route_for("/quotes").unwrap().service, "provider");
        assert_eq!(route_for("/sources").unwrap().service, "ingestion");
        assert_eq!(route_for("/services/provider").unwrap().service, "registry");
        assert!(route_for("/quotesX").is_none());
        assert!(route_for("/").is_none());
        assert!(route_for("/metrics").is_none());
    }
}
