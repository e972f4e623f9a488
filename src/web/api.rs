//! The JSON API: the same data and the same query parameters as the pages (DESIGN §5),
//! for scripts. The shapes below are the documented contract; they are spelled out here
//! rather than derived from the store's row types so a schema change cannot silently
//! change the API.
//!
//! Times are unix ms UTC; absent values are `null`. Errors are
//! `{"error": "<message naming the parameter>"}` with the HTTP status.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{AppState, WebError};
use crate::store;
use crate::store::devices::read::DeviceRow;
use crate::store::dns::read::{DnsFilter, DnsRow};
use crate::store::flows::read::FlowRow;
use crate::store::hosts::read::{HostFilter, RemoteHostRow};
use crate::store::rollups::read::{DeviceMinute, RemoteHostMinute};
use crate::time::now_ms;

/// A [`WebError`] rendered as JSON.
pub struct ApiError(WebError);

impl<E: Into<WebError>> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.0.log();
        let body = serde_json::json!({ "error": self.0.to_string() });
        (self.0.status(), Json(body)).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// `GET /api/flows`. Each flow carries `domain` (the name its client asked for, or
/// null), `domain_canonical` (the CNAME target, or null) and `dns_match` (`exact`,
/// `stale`, `other-client`, `sni` or `none`); names are canonical text (lowercase, `\DDD` for
/// bytes outside printable ASCII), otherwise verbatim.
/// Takes every parameter of `/flows` (`page=last` too; `limit` for `per_page`). `total` is exact up to
/// `store::flows::read::COUNT_PAGES` pages; past it `total` is that many rows and `total_capped` is true. Each flow
/// also carries `score`: the highest score of the detection hits it caused, or null.
#[derive(Serialize)]
pub struct FlowsResponse {
    pub total: u64,
    pub total_capped: bool,
    pub page: u32,
    pub last_page: bool,
    pub per_page: u32,
    pub flows: Vec<FlowRow>,
}

pub async fn flows(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> ApiResult<FlowsResponse> {
    let filter = super::query::parse_flow_filter(query)?;
    let page = state
        .reads()
        .run(move |c| store::flows::read::flows(c, &filter))
        .await?;
    Ok(Json(FlowsResponse {
        total: page.total,
        total_capped: page.capped,
        page: page.page,
        last_page: page.last,
        per_page: page.per_page,
        flows: page.flows,
    }))
}

/// `GET /api/devices`: every device (up to `store::devices::read::MAX_DEVICES`), latest first.
#[derive(Serialize)]
pub struct DevicesResponse {
    pub devices: Vec<ApiDevice>,
}

#[derive(Serialize)]
pub struct ApiDevice {
    pub id: i64,
    pub ip: String,
    pub mac: Option<String>,
    pub name: Option<String>,
    pub hostname: Option<String>,
    /// The IEEE registry's name for the MAC's maker, or "randomized (locally
    /// administered)" for a private MAC.
    pub vendor: Option<String>,
    pub notes: Option<String>,
    /// Addresses the device has used, most recent first (at most 16).
    pub addrs: Vec<String>,
    pub first_seen: i64,
    pub last_seen: i64,
    pub bytes_up: i64,
    pub bytes_down: i64,
    pub flows: i64,
}

impl From<DeviceRow> for ApiDevice {
    fn from(d: DeviceRow) -> Self {
        ApiDevice {
            id: d.id,
            ip: d.ip,
            mac: d.mac,
            name: d.name,
            hostname: d.hostname,
            vendor: d.vendor,
            notes: d.notes,
            addrs: d.addrs,
            first_seen: d.first_seen,
            last_seen: d.last_seen,
            bytes_up: d.bytes_up,
            bytes_down: d.bytes_down,
            flows: d.flows,
        }
    }
}

pub async fn devices(State(state): State<AppState>) -> ApiResult<DevicesResponse> {
    let devices = state.reads().run(store::devices::read::devices).await?;
    Ok(Json(DevicesResponse {
        devices: devices.into_iter().map(ApiDevice::from).collect(),
    }))
}

/// `GET /api/hosts`: one page of remote hosts; takes the `/hosts` parameters (`q`,
/// `sort`, `order`, `page`, `per_page`).
#[derive(Serialize)]
pub struct HostsResponse {
    pub total: u64,
    pub page: u32,
    pub per_page: u32,
    pub hosts: Vec<ApiHost>,
}

#[derive(Serialize)]
pub struct ApiHost {
    pub id: i64,
    pub ip: String,
    /// Reverse DNS name; "none" when the address has no PTR, null until looked up.
    pub rdns: Option<String>,
    /// Autonomous system and its organisation, from the offline ASN database.
    pub asn: Option<i64>,
    pub org: Option<String>,
    pub first_seen: i64,
    pub last_seen: i64,
    pub bytes_up: i64,
    pub bytes_down: i64,
    pub flows: i64,
    /// The name most flows reached it as, or null.
    pub top_domain: Option<String>,
}

impl From<RemoteHostRow> for ApiHost {
    fn from(h: RemoteHostRow) -> Self {
        ApiHost {
            id: h.id,
            ip: h.ip,
            rdns: h.rdns,
            asn: h.asn,
            org: h.org,
            first_seen: h.first_seen,
            last_seen: h.last_seen,
            bytes_up: h.bytes_up,
            bytes_down: h.bytes_down,
            flows: h.flows,
            top_domain: h.top_domain,
        }
    }
}

pub async fn hosts(
    State(state): State<AppState>,
    query: Result<Query<crate::web::query::HostQuery>, QueryRejection>,
) -> ApiResult<HostsResponse> {
    let filter = HostFilter::parse(&query?.0)?;
    let page = state
        .reads()
        .run(move |c| store::hosts::read::remote_hosts(c, &filter))
        .await?;
    Ok(Json(HostsResponse {
        total: page.total,
        page: page.page,
        per_page: page.per_page,
        hosts: page.hosts.into_iter().map(ApiHost::from).collect(),
    }))
}

/// `GET /api/dns`: one page of the DNS log, newest first; takes the `/dns` parameters
/// (`device`, `client`, `name`, `type`, `rcode`, `page`, `per_page`).
#[derive(Serialize)]
pub struct DnsResponse {
    pub total: u64,
    pub page: u32,
    pub per_page: u32,
    pub queries: Vec<ApiDnsQuery>,
}

#[derive(Serialize)]
pub struct ApiDnsQuery {
    pub id: i64,
    /// Unix ms of the answer, or of the query when no answer was seen.
    pub ts: i64,
    pub client: String,
    pub device_id: Option<i64>,
    pub device_name: Option<String>,
    /// The name asked for (canonical text).
    pub name: Option<String>,
    /// `A`, `AAAA`, … or `TYPEnnn`.
    #[serde(rename = "type")]
    pub qtype: String,
    /// `NOERROR`, `NXDOMAIN`, … or null when no answer was seen.
    pub rcode: Option<String>,
    /// Address records in the answer.
    pub answers: i64,
    /// End of the CNAME chain, or null.
    pub canonical_name: Option<String>,
    /// `packet` or `log`.
    pub source: String,
}

impl From<DnsRow> for ApiDnsQuery {
    fn from(q: DnsRow) -> Self {
        ApiDnsQuery {
            id: q.id,
            ts: q.ts,
            client: q.client,
            device_id: q.device_id,
            device_name: q.device_name,
            name: q.name,
            qtype: crate::dns_name::qtype_name(q.qtype),
            rcode: q.rcode.map(crate::dns_name::rcode_name),
            answers: q.answers,
            canonical_name: q.canonical,
            source: q.source.as_str().to_owned(),
        }
    }
}

pub async fn dns(
    State(state): State<AppState>,
    query: Result<Query<crate::web::query::DnsQuery>, QueryRejection>,
) -> ApiResult<DnsResponse> {
    let filter = DnsFilter::parse(&query?.0)?;
    let page = state
        .reads()
        .run(move |c| store::dns::read::dns_queries(c, &filter))
        .await?;
    Ok(Json(DnsResponse {
        total: page.total,
        page: page.page,
        per_page: page.per_page,
        queries: page.queries.into_iter().map(ApiDnsQuery::from).collect(),
    }))
}

#[derive(Debug, Default, Deserialize)]
pub struct SinceQuery {
    pub since: Option<String>,
}

/// Default minutes window: the last hour.
const DEFAULT_SINCE_MS: i64 = 60 * 60_000;

fn parse_since(q: &SinceQuery) -> Result<i64, WebError> {
    match q.since.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(now_ms() - DEFAULT_SINCE_MS),
        Some(s) => s.parse::<i64>().ok().filter(|ms| *ms >= 0).ok_or_else(|| {
            WebError::BadRequest(format!(
                "invalid query parameter `since` = {s:?}: expected unix milliseconds (UTC)"
            ))
        }),
    }
}

/// `GET /api/{devices,hosts}/{id}/minutes`: every column of the rollup, oldest first,
/// at most seven days of rows (the newest when there are more).
#[derive(Serialize)]
pub struct MinutesResponse<M> {
    pub minutes: Vec<M>,
}

pub async fn device_minutes(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
    query: Result<Query<SinceQuery>, QueryRejection>,
) -> ApiResult<MinutesResponse<DeviceMinute>> {
    let Path(id) = id?;
    let since = parse_since(&query?.0)?;
    let minutes = state
        .reads()
        .run(move |c| {
            Ok(match store::devices::read::device(c, id)? {
                Some(_) => Some(store::rollups::read::device_minutes(c, id, since)?),
                None => None,
            })
        })
        .await?
        .ok_or_else(|| WebError::NotFound(format!("no device with id {id}")))?;
    Ok(Json(MinutesResponse { minutes }))
}

pub async fn host_minutes(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
    query: Result<Query<SinceQuery>, QueryRejection>,
) -> ApiResult<MinutesResponse<RemoteHostMinute>> {
    let Path(id) = id?;
    let since = parse_since(&query?.0)?;
    let minutes = state
        .reads()
        .run(move |c| {
            Ok(match store::hosts::read::remote_host(c, id)? {
                Some(_) => Some(store::rollups::read::remote_host_minutes(c, id, since)?),
                None => None,
            })
        })
        .await?
        .ok_or_else(|| WebError::NotFound(format!("no remote host with id {id}")))?;
    Ok(Json(MinutesResponse { minutes }))
}
