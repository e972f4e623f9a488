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

/// The media type of an embedded asset, by its extension. `assets/` holds only these
/// kinds (a test checks each file has one); a general table of a thousand types is not
/// needed to serve three.
fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("css") => "text/css",
        Some("js") => "text/javascript",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
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
    let mut response = if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        file.data.into_owned().into_response()
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&path)),
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_media_type() {
        let names: Vec<_> = Assets::iter().collect();
        assert!(!names.is_empty());
        for name in names {
            assert_ne!(content_type(&name), "application/octet-stream", "{name}");
        }
        assert_eq!(content_type("netmon.css"), "text/css");
        assert_eq!(content_type("netmon.js"), "text/javascript");
        assert_eq!(content_type("favicon.svg"), "image/svg+xml");
        assert_eq!(content_type("README"), "application/octet-stream");
    }
}
