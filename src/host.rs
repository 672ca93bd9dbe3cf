//! The host calls the filter makes, with host statuses turned into values
//! the filter can act on. Nothing here decides anything.

use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, Bytes, MapType, Status};
use sandbox_router_core::header_map;
use sandbox_router_core::recovery::{Direction, SharedData};

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> Status;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> Status;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> Status;
}

/// The value of property `path` (its segments joined by NUL, as the host
/// reads a path), if the host has one.
///
/// The SDK's `get_property` takes the path as a `Vec` of segments and
/// joins them into a new buffer on every call; the filter's paths are
/// constants. It also panics on a status it does not expect; this answers
/// `None`.
#[allow(unsafe_code)]
fn property(path: &[u8]) -> Option<Bytes> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: `path` is valid for `path.len()` bytes during the call, and
    // the host only reads it. On `Ok` with a value, the host has written
    // `data` and `size` of a buffer it allocated through this module's
    // `proxy_on_memory_allocate` (a `Vec<u8>` of capacity `size`,
    // forgotten, in the SDK); taking it back as that `Vec` is what the SDK's
    // own getters do, and frees it.
    unsafe {
        if proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) != Status::Ok
            || data.is_null()
        {
            return None;
        }
        Some(Vec::from_raw_parts(data, size, size))
    }
}

/// Sets property `path` (one segment: its bytes) of the current request to
/// `value`. The SDK's `set_property` would first copy the path into a new
/// buffer, and panics on any status but `Ok` (a host answers `NotFound`
/// when there is no request to set it on).
#[allow(unsafe_code)]
fn set_property(path: &[u8], value: &[u8]) -> Status {
    // SAFETY: both pointers are valid for their lengths during the call,
    // and the host only reads them.
    unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) }
}

/// Every request header, in the host's serialization (read in place with
/// [`sandbox_router_core::header_map::pairs`]): one host call, one buffer.
/// Empty if the host has no request headers to give.
///
/// The SDK's `get_map_bytes` makes the same call, then copies each name and
/// value out (a `String` and a `Vec` per header) and panics on a name that
/// is not UTF-8; this keeps the buffer as the host wrote it.
#[allow(unsafe_code)]
pub fn request_header_map() -> Bytes {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: on `Ok` the host has written `data` and `size` of a buffer it
    // allocated through this module's `proxy_on_memory_allocate`, which the
    // SDK implements as a `Vec<u8>` of capacity `size`, forgotten; taking it
    // back as that `Vec` is what the SDK's own getters do, and frees it.
    unsafe {
        if proxy_get_header_map_pairs(MapType::HttpRequestHeaders, &mut data, &mut size)
            != Status::Ok
            || data.is_null()
        {
            return Bytes::new();
        }
        Vec::from_raw_parts(data, size, size)
    }
}

/// The request's headers, borrowed from `buffer` (what
/// [`request_header_map`] read). A buffer that is not a header map (the
/// host always writes one) is logged and read as no headers.
pub fn header_pairs(buffer: &[u8]) -> Vec<header_map::Header<'_>> {
    header_map::pairs(buffer).unwrap_or_else(|error| {
        log::warn!("sandbox-router: the host's request header map is malformed: {error}");
        Vec::new()
    })
}

/// Request headers as Envoy holds them (names lower case, values raw
/// bytes), copied out: for the paths that change them as they go (the
/// mesh's edge, a refused configuration).
pub fn request_headers() -> Vec<(String, Bytes)> {
    let buffer = request_header_map();
    // A name that is not UTF-8 (Envoy's codecs accept none) is left out:
    // no carrier has such a name, and the edge rewrites headers by name.
    header_pairs(&buffer)
        .into_iter()
        .filter_map(|(name, value)| Some((String::from_utf8(name.to_vec()).ok()?, value.to_vec())))
        .collect()
}

/// Filter state of the current request, `wasm.<name>` to Envoy: what its
/// access logs read as `%FILTER_STATE(wasm.<name>:PLAIN)%`. Set again, it
/// is replaced (Envoy keeps it writable for the plugin).
pub fn set_filter_state(name: &str, value: &str) {
    // A refused write loses a log field; it must not fail a request.
    let status = set_property(name.as_bytes(), value.as_bytes());
    if status != Status::Ok {
        log::debug!("sandbox-router: filter state {name} not set: {status:?}");
    }
}

/// A filter state value this plugin set on the current request.
pub fn filter_state(name: &str) -> Option<String> {
    property(name.as_bytes()).and_then(|bytes| String::from_utf8(bytes).ok())
}

/// How the host names the cluster of the chosen route (asked once per
/// worker, on its first keyed request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterAttribute {
    /// `xds.cluster_name` (Envoy 1.26 and later, which always answer
    /// `xds.node.id`): a missing one means the request has no route.
    Xds,
    /// `cluster_name` (older hosts); a missing one says nothing.
    Legacy,
}

impl ClusterAttribute {
    /// Asks the host which it answers.
    pub fn detect() -> Self {
        let xds = property(b"xds\0node\0id").is_some();
        if xds {
            ClusterAttribute::Xds
        } else {
            ClusterAttribute::Legacy
        }
    }

    /// Whether a missing cluster means that the request has no route.
    pub fn names_routes(self) -> bool {
        self == ClusterAttribute::Xds
    }

    /// Whether Envoy chose a route at all (`xds.route_name`): a route
    /// without a cluster (`direct_response`, `redirect`) is still a route,
    /// which the filter decides from `:authority`; only a request with no
    /// route (Envoy answers `404`) is left to Envoy.
    pub fn has_route(self) -> bool {
        self == ClusterAttribute::Xds && property(b"xds\0route_name").is_some()
    }

    /// The cluster of the route Envoy has chosen so far, if the host says.
    /// Envoy 1.40 answers `xds.cluster_name` in the request-headers phase.
    pub fn route_cluster_name(self) -> Option<String> {
        let path: &[u8] = match self {
            ClusterAttribute::Xds => b"xds\0cluster_name",
            ClusterAttribute::Legacy => b"cluster_name",
        };
        property(path)
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .filter(|name| !name.is_empty())
    }
}

pub fn set_request_header(name: &str, value: &str) -> Result<(), Status> {
    hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value))
}

/// Adds one more line of header `name` (a value may be any bytes).
pub fn add_request_header(name: &str, value: &[u8]) -> Result<(), Status> {
    hostcalls::add_map_value_bytes(MapType::HttpRequestHeaders, name, value)
}

/// Sets response header `name` (replacing any line of it).
pub fn set_response_header(name: &str, value: &str) -> Result<(), Status> {
    hostcalls::set_map_value(MapType::HttpResponseHeaders, name, Some(value))
}

/// Adds one more line of response header `name`.
pub fn add_response_header(name: &str, value: &str) -> Result<(), Status> {
    hostcalls::add_map_value(MapType::HttpResponseHeaders, name, value)
}

pub fn remove_request_header(name: &str) -> Result<(), Status> {
    hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None)
}

/// Whether the route cache was cleared; `false` where the host does not
/// offer `clear_route_cache` (Envoy also clears it on header changes made
/// through the proxy-wasm ABI, so routing still sees the change there).
/// Acts on the effective context: after [`switch_to`], on that request.
pub fn clear_route_cache() -> bool {
    hostcalls::call_foreign_function("clear_route_cache", None).is_ok()
}

/// After the filter changed request headers (`changed`), makes Envoy select
/// the route again: route selection ran before the filter. Every path that
/// changes headers ends here: a request decided at once, one resumed after
/// a RouteService answer (its own or another request's), a pass-through.
///
/// Envoy 1.40 selects it lazily: clearing only drops the cached route, and
/// `xds.cluster_name` keeps naming the old cluster until the router (after
/// this filter) selects it again. So whether the marking reached the fork
/// is read later, in the response phase ([`crate::worker::Worker::check`]).
pub fn reselect_route_if(changed: bool) {
    if changed {
        clear_route_cache();
    }
}

/// The plugin configuration bytes (empty when there is none).
pub fn plugin_configuration() -> Bytes {
    hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// The host's clock, in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Starts `GET <path>` to an Envoy cluster; the answer arrives in
/// `on_http_call_response` of the context that is active now.
pub fn get(
    cluster: &str,
    authority: &str,
    path: &str,
    if_none_match: Option<&str>,
    timeout_ms: u64,
) -> Result<u32, Status> {
    let mut headers = vec![
        (":method", "GET"),
        (":path", path),
        (":authority", authority),
        (":scheme", "http"),
        ("accept", "application/json"),
        ("user-agent", "sandbox-router"),
    ];
    if let Some(etag) = if_none_match {
        headers.push(("if-none-match", etag));
    }
    hostcalls::dispatch_http_call(
        cluster,
        headers,
        None,
        vec![],
        Duration::from_millis(timeout_ms),
    )
}

/// The `:status` of the call response being handled, if there is one.
/// `num_headers` is what the host reported with the response: `0` means the
/// call failed without a response (reset mid-answer, a body slower than the
/// timeout after the headers came, a buffer limit), and then Envoy has no
/// header map at all and answers `BadArgument`, on which the SDK's getter
/// panics (aborting the VM). So a response without headers is not asked.
pub fn call_response_status(num_headers: usize) -> Option<u16> {
    if num_headers == 0 {
        return None;
    }
    hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
        .ok()
        .flatten()
        .and_then(|status| std::str::from_utf8(&status).ok()?.parse().ok())
}

/// The body of the call response being handled.
pub fn call_response_body(body_size: usize) -> Bytes {
    if body_size == 0 {
        return Bytes::new();
    }
    hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// The name of the plugin being configured (Envoy's `plugin_name`), empty
/// if the host does not say.
pub fn plugin_name() -> String {
    property(b"plugin_name")
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .unwrap_or_default()
}

/// Stores `value` under `key` unless it is there already; `true` if this
/// call stored it (first to see it), `false` if it was there or another VM
/// stored something in between.
pub fn first_to_store(key: &str, value: &[u8]) -> bool {
    let (stored, cas) = shared_data(key);
    stored.as_deref() != Some(value) && set_shared_data(key, value, cas).is_ok()
}

pub fn shared_data(key: &str) -> (Option<Bytes>, Option<u32>) {
    hostcalls::get_shared_data(key).unwrap_or((None, None))
}

pub fn set_shared_data(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), Status> {
    hostcalls::set_shared_data(key, Some(value), cas)
}

/// Makes later host calls act on request `context_id`; `false` if that
/// request is gone.
pub fn switch_to(context_id: u32) -> bool {
    hostcalls::set_effective_context(context_id).is_ok()
}

/// Resumes the current (effective) request. Envoy defers the resumption
/// until this VM call returns, so it is safe from within a callback.
pub fn resume_request() {
    let _ = hostcalls::resume_http_request();
}

pub fn set_tick_period(period_ms: u64) {
    let _ = hostcalls::set_tick_period(Duration::from_millis(period_ms));
}

/// Which listener the current request came through: Envoy's attribute
/// `xds.listener_direction`, the listener's `traffic_direction` (an int64:
/// 1 inbound, 2 outbound), which Istio sets on every sidecar listener.
/// Envoy 1.40 answers it in an HTTP filter; its older name
/// `listener_direction` answers nothing there (checked in a real Envoy
/// 1.40, `e2e/tests/recovery.rs`) and is asked only if the first is
/// missing. `Unspecified` where neither says: the filter then treats the
/// request as outbound.
pub fn listener_direction() -> Direction {
    let bytes = property(b"xds\0listener_direction").or_else(|| property(b"listener_direction"));
    Direction::from_property(bytes.as_deref())
}

/// The Envoy-wide shared data (one table for every worker VM of the plugin,
/// and for both listeners of a sidecar), for the recovery table.
pub struct HostSharedData;

impl SharedData for HostSharedData {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        shared_data(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        set_shared_data(key, value, cas).is_ok()
    }
}
