//! The route table: path prefix → registry service id.

use axum::http::Method;

use crate::guard::Access;

pub struct Route {
    pub prefix: &'static str,
    pub service: &'static str,
    /// Only these methods are routed (None: all).
    pub methods: Option<&'static [Method]>,
    /// Who may use it.
    pub access: Access,
}

const READ_ONLY: &[Method] = &[Method::GET, Method::HEAD];

pub const ROUTES: &[Route] = &[
    Route { prefix: "/ws", service: "provider", methods: None, access: Access::Public },
    Route { prefix: "/session", service: "provider", methods: None, access: Access::Public },
    Route { prefix: "/quotes", service: "provider", methods: None, access: Access::Public },
    Route { prefix: "/symbols", service: "provider", methods: None, access: Access::Public },
    Route { prefix: "/auth", service: "provider", methods: None, access: Access::Public },
    Route { prefix: "/users", service: "provider", methods: None, access: Access::Public },
    Route { prefix: "/alerts", service: "provider", methods: None, access: Access::Public },
    Route { prefix: "/portfolio", service: "provider", methods: None, access: Access::Public },
    Route { prefix: "/admin", service: "provider", methods: None, access: Access::Public },
    Route { prefix: "/sources", service: "ingestion", methods: None, access: Access::Public },
    Route { prefix: "/ingest", service: "ingestion", methods: None, access: Access::Ingest },
    // The registry is public read-only: writes go to it directly.
    Route { prefix: "/services", service: "registry", methods: Some(READ_ONLY), access: Access::Public },
    Route { prefix: "/slos", service: "registry", methods: None, access: Access::AdminWrites },
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
