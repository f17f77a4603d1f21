//! The admin router, built so that it knows its own routes. axum cannot list what a `Router`
//! serves, and the OpenAPI document (`openapi.json`) must describe exactly that: every admin
//! module registers its routes through [`Routes`], one method at a time, which records each
//! `(method, path)` beside the axum route it adds. A unit test compares the record with the
//! document.

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{self, MethodRouter};
use axum::Router;

use crate::app::AppState;

/// A router of admin routes and the list of what it registered.
pub struct Routes {
    router: Router<AppState>,
    registered: Vec<(Method, String)>,
}

impl Routes {
    pub fn new() -> Routes {
        Routes {
            router: Router::new(),
            registered: Vec::new(),
        }
    }

    pub fn get<H: Handler<T, AppState>, T: 'static>(self, path: &str, handler: H) -> Routes {
        self.on(Method::GET, path, routing::get(handler))
    }

    pub fn post<H: Handler<T, AppState>, T: 'static>(self, path: &str, handler: H) -> Routes {
        self.on(Method::POST, path, routing::post(handler))
    }

    pub fn put<H: Handler<T, AppState>, T: 'static>(self, path: &str, handler: H) -> Routes {
        self.on(Method::PUT, path, routing::put(handler))
    }

    pub fn patch<H: Handler<T, AppState>, T: 'static>(self, path: &str, handler: H) -> Routes {
        self.on(Method::PATCH, path, routing::patch(handler))
    }

    pub fn delete<H: Handler<T, AppState>, T: 'static>(self, path: &str, handler: H) -> Routes {
        self.on(Method::DELETE, path, routing::delete(handler))
    }

    /// Adds one method on `path` (axum merges the methods of one path).
    fn on(mut self, method: Method, path: &str, route: MethodRouter<AppState>) -> Routes {
        self.registered.push((method, path.to_string()));
        self.router = self.router.route(path, route);
        self
    }

    /// Adds another module's routes.
    pub fn merge(mut self, other: Routes) -> Routes {
        self.registered.extend(other.registered);
        self.router = self.router.merge(other.router);
        self
    }

    /// The `(method, path)` of every route, in registration order.
    pub fn registered(&self) -> &[(Method, String)] {
        &self.registered
    }

    pub fn into_router(self) -> Router<AppState> {
        self.router
    }
}

impl Default for Routes {
    fn default() -> Routes {
        Routes::new()
    }
}
