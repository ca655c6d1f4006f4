//! Content negotiation for compressed bodies (brotli, then gzip) and entity tags with 304s.
//! Used by the JSON of dashboards and snapshots and by the cockpit's static files.

use std::io::Write;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

/// Bodies smaller than this go out as they are: compressing them saves nothing.
const MIN_COMPRESS_BYTES: usize = 256;

/// Brotli's level (0..=11) for responses made on request: fast, most of the gain.
const BROTLI_QUALITY: u32 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Brotli,
    Gzip,
    Identity,
}

impl Encoding {
    /// The encoding the client prefers by its q-values (RFC 9110 §12.5.3: `q=0` refuses one,
    /// `*` stands for the rest); ties go to brotli, then gzip. A client that accepts neither, or
    /// sends no header, gets the body as it is.
    pub fn negotiate(headers: &HeaderMap) -> Encoding {
        const OURS: &[&str] = &["br", "gzip", "identity"];
        let accept = headers
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok());
        let best = negotiator::preferred_encodings(accept, Some(OURS), Some(OURS));
        match best.first().map(String::as_str) {
            Some("br") => Encoding::Brotli,
            Some("gzip") => Encoding::Gzip,
            _ => Encoding::Identity,
        }
    }

    fn header(self) -> Option<&'static str> {
        match self {
            Encoding::Brotli => Some("br"),
            Encoding::Gzip => Some("gzip"),
            Encoding::Identity => None,
        }
    }

    /// `quality` is brotli's 0..=11 (gzip uses its default level).
    pub fn encode(self, body: &[u8], quality: u32) -> Vec<u8> {
        match self {
            Encoding::Identity => body.to_vec(),
            Encoding::Gzip => {
                let mut e =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(body).expect("writing to memory");
                e.finish().expect("writing to memory")
            }
            Encoding::Brotli => {
                let mut out = Vec::new();
                {
                    let mut w = brotli::CompressorWriter::new(&mut out, 4096, quality, 22);
                    w.write_all(body).expect("writing to memory");
                }
                out
            }
        }
    }
}

/// True when the request's `If-None-Match` names `etag` (or is `*`).
pub fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .map(|t| t.trim().trim_start_matches("W/"))
                .any(|t| t == etag || t == "*")
        })
}

/// A 200 with the body compressed as the client accepts, or a 304 when its copy is current.
pub fn respond(
    request: &HeaderMap,
    content_type: &'static str,
    body: Vec<u8>,
    etag: Option<&str>,
    cache_control: &'static str,
) -> Response {
    reply(request, content_type, etag, cache_control, |accepted| {
        let encoding = if body.len() < MIN_COMPRESS_BYTES {
            Encoding::Identity
        } else {
            accepted
        };
        (encoding, encoding.encode(&body, BROTLI_QUALITY))
    })
}

/// The shared response path: 304 on a matching tag, else `encode` picks the body for the
/// negotiated encoding (it may fall back to identity).
fn reply(
    request: &HeaderMap,
    content_type: &'static str,
    etag: Option<&str>,
    cache_control: &'static str,
    encode: impl FnOnce(Encoding) -> (Encoding, Vec<u8>),
) -> Response {
    let mut builder = Response::builder()
        .header(header::VARY, "Accept-Encoding")
        .header(header::CACHE_CONTROL, cache_control);
    if let Some(tag) = etag {
        builder = builder.header(header::ETAG, tag);
        if not_modified(request, tag) {
            return builder
                .status(StatusCode::NOT_MODIFIED)
                .body(Body::empty())
                .expect("valid response");
        }
    }
    let (encoding, body) = encode(Encoding::negotiate(request));
    if let Some(name) = encoding.header() {
        builder = builder.header(header::CONTENT_ENCODING, name);
    }
    builder
        .header(header::CONTENT_TYPE, HeaderValue::from_static(content_type))
        .body(Body::from(body))
        .expect("valid response")
}

/// A static body whose compressed forms are made on first request and kept (most files are
/// asked for in one encoding; tests start many servers that never serve ECharts).
#[derive(Debug, Default)]
pub struct Precompressed {
    identity: Vec<u8>,
    gzip: std::sync::OnceLock<Vec<u8>>,
    brotli: std::sync::OnceLock<Vec<u8>>,
}

impl Precompressed {
    pub fn new(body: Vec<u8>) -> Self {
        Self {
            identity: body,
            ..Self::default()
        }
    }

    /// Revalidated on every load (`no-cache`), so a new build shows at once.
    pub fn respond(&self, request: &HeaderMap, content_type: &'static str, etag: &str) -> Response {
        reply(request, content_type, Some(etag), "no-cache", |encoding| {
            let body = match encoding {
                Encoding::Brotli => self
                    .brotli
                    .get_or_init(|| Encoding::Brotli.encode(&self.identity, BROTLI_QUALITY)),
                Encoding::Gzip => self
                    .gzip
                    .get_or_init(|| Encoding::Gzip.encode(&self.identity, BROTLI_QUALITY)),
                Encoding::Identity => &self.identity,
            };
            (encoding, body.clone())
        })
    }
}
