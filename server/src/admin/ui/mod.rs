//! The dashboard served under `/ui`: one static page, its script and its style sheet, embedded in
//! the binary (no build step, no external resources). The page polls this node's admin API
//! (`/status`, `/members`, `/sessions`, `/tree`) and draws request rate and latency from a ring
//! buffer kept in the browser.

/// `/ui`: the page.
pub const INDEX_HTML: &str = include_str!("index.html");
/// `/ui/app.js`: polling, charts, the znode browser.
pub const APP_JS: &str = include_str!("app.js");
/// `/ui/style.css`.
pub const STYLE_CSS: &str = include_str!("style.css");
