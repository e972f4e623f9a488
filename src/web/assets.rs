//! CSS, the script and the icon, embedded in the binary (DESIGN §1 principle 6: no CDN,
//! nothing to install next to the binary).
//!
//! Pages link `…/netmon.css?v=<content hash>`; a request carrying the current hash is
//! cacheable forever (`immutable`), so a browser asks again only after an upgrade
//! changes the file. Any other request revalidates with the `ETag`.

use axum::extract::{Path, RawQuery};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "assets/"]
struct Assets;

/// First 16 hex digits of the file's SHA-256: enough to tell versions apart.
fn version(file: &rust_embed::EmbeddedFile) -> String {
    file.metadata.sha256_hash()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The URL of an embedded asset, versioned by content.
pub fn url(name: &str) -> String {
    match Assets::get(name) {
        Some(file) => format!("/assets/{name}?v={}", version(&file)),
        None => format!("/assets/{name}"),
    }
}

pub async fn serve(
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(file) = Assets::get(&path) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let version = version(&file);
    let etag = format!("\"{version}\"");
    let cache = if query.as_deref() == Some(&format!("v={version}")) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mime = mime_guess::from_path(&path).first_or_octet_stream();
    let mut response = if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        file.data.into_owned().into_response()
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(mime.as_ref()) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}
