//! The host calls the filter makes, with host statuses turned into values
//! the filter can act on. Nothing here decides anything.

use sandbox_router_core::header_map;
use sandbox_router_core::recovery::{Direction, SharedData};

use crate::abi::{self, BufferType, HeaderMap, MetricType, Status};

/// Bytes the host handed over (a header map, a value, a body).
pub type Bytes = Vec<u8>;

/// Takes back the buffer a host call wrote (`data`, `size`) on `status`:
/// `Ok(None)` when the host found nothing (`NotFound`, or `Ok` with no
/// buffer), the status when it refused.
#[allow(unsafe_code)]
fn returned(status: u32, data: *mut u8, size: usize) -> Result<Option<Bytes>, Status> {
    match Status::from_raw(status) {
        Status::Ok if data.is_null() => Ok(None),
        // SAFETY: on `Ok` with a buffer, the host allocated `size` bytes at
        // `data` through this module's `proxy_on_memory_allocate` (a boxed
        // `[u8]` of exactly `size`, leaked: `crate::exports`) and wrote
        // them; taking it back as a `Vec` of that capacity frees it with the
        // same layout.
        Status::Ok => Ok(Some(unsafe { Vec::from_raw_parts(data, size, size) })),
        Status::NotFound => Ok(None),
        status => Err(status),
    }
}

/// The value of property `path` (its segments joined by NUL, as the host
/// reads a path), if the host has one. The filter's paths are constants:
/// nothing is joined per call.
#[allow(unsafe_code)]
fn property(path: &[u8]) -> Option<Bytes> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: `path` is valid for `path.len()` bytes during the call and
    // only read; `data` and `size` are valid for writes.
    let status =
        unsafe { abi::proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) };
    returned(status, data, size).ok().flatten()
}

/// Sets property `path` (one segment: its bytes) of the current request to
/// `value` (a host answers `NotFound` when there is no request to set it
/// on).
#[allow(unsafe_code)]
fn set_property(path: &[u8], value: &[u8]) -> Status {
    // SAFETY: both pointers are valid for their lengths during the call,
    // and the host only reads them.
    Status::from_raw(unsafe {
        abi::proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len())
    })
}

/// Every request header, in the host's serialization (read in place with
/// [`sandbox_router_core::header_map::pairs`]): one host call, one buffer,
/// nothing copied per header. Empty if the host has no request headers to
/// give.
#[allow(unsafe_code)]
pub fn request_header_map() -> Bytes {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: `data` and `size` are valid for writes.
    let status =
        unsafe { abi::proxy_get_header_map_pairs(HeaderMap::Request as u32, &mut data, &mut size) };
    returned(status, data, size)
        .ok()
        .flatten()
        .unwrap_or_default()
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

/// Replaces (`Some`) or removes (`None`) header `name` of map `map`.
#[allow(unsafe_code)]
fn replace_header(map: HeaderMap, name: &str, value: Option<&[u8]>) -> Result<(), Status> {
    // SAFETY: the pointers are valid for their lengths during the call,
    // and the host only reads them.
    let status = unsafe {
        match value {
            Some(value) => abi::proxy_replace_header_map_value(
                map as u32,
                name.as_ptr(),
                name.len(),
                value.as_ptr(),
                value.len(),
            ),
            None => abi::proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len()),
        }
    };
    Status::from_raw(status).ok()
}

/// Adds one more line of header `name` to map `map`.
#[allow(unsafe_code)]
fn add_header(map: HeaderMap, name: &str, value: &[u8]) -> Result<(), Status> {
    // SAFETY: the pointers are valid for their lengths during the call,
    // and the host only reads them.
    let status = unsafe {
        abi::proxy_add_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    };
    Status::from_raw(status).ok()
}

/// Sets request header `name` (replacing any line of it).
///
/// Every change to a request header (this, [`add_request_header`],
/// [`remove_request_header`]) also makes Envoy select the route again: for a
/// module of proxy-wasm ABI 0.2.1 (this one: `crate::exports`) the host
/// clears the route cache on each request-header change. ABI 0.2.0 dropped
/// 0.1.0's `proxy_clear_route_cache` for exactly that, and Envoy keeps
/// clearing for 0.2.1 modules (PR 36671 stopped it only for later ABIs). So
/// the filter makes no call of its own for it (one was 6,508 instructions
/// per marked request, docs/performance.md). Selection runs lazily, when the
/// router asks: `xds.cluster_name` names the old cluster until then, and
/// whether a marking reached the fork is read in the response phase
/// ([`crate::worker::Worker::check`]).
pub fn set_request_header(name: &str, value: &str) -> Result<(), Status> {
    replace_header(HeaderMap::Request, name, Some(value.as_bytes()))
}

/// Adds one more line of header `name` (a value may be any bytes).
pub fn add_request_header(name: &str, value: &[u8]) -> Result<(), Status> {
    add_header(HeaderMap::Request, name, value)
}

/// Sets response header `name` (replacing any line of it).
pub fn set_response_header(name: &str, value: &str) -> Result<(), Status> {
    replace_header(HeaderMap::Response, name, Some(value.as_bytes()))
}

/// Adds one more line of response header `name`.
pub fn add_response_header(name: &str, value: &str) -> Result<(), Status> {
    add_header(HeaderMap::Response, name, value.as_bytes())
}

pub fn remove_request_header(name: &str) -> Result<(), Status> {
    replace_header(HeaderMap::Request, name, None)
}

/// Bytes of buffer `buffer` from `start`, at most `max_size` of them.
#[allow(unsafe_code)]
fn buffer(buffer: BufferType, start: usize, max_size: usize) -> Option<Bytes> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: `data` and `size` are valid for writes.
    let status = unsafe {
        abi::proxy_get_buffer_bytes(buffer as u32, start, max_size, &mut data, &mut size)
    };
    returned(status, data, size).ok().flatten()
}

/// The plugin configuration bytes (empty when there is none).
pub fn plugin_configuration() -> Bytes {
    buffer(BufferType::PluginConfiguration, 0, usize::MAX).unwrap_or_default()
}

/// The host's clock, in milliseconds since the Unix epoch (0 if it does
/// not answer).
#[allow(unsafe_code)]
pub fn now_ms() -> u64 {
    let mut nanos: u64 = 0;
    // SAFETY: `nanos` is valid for writes.
    let status = unsafe { abi::proxy_get_current_time_nanoseconds(&mut nanos) };
    match Status::from_raw(status) {
        Status::Ok => nanos / 1_000_000,
        _ => 0,
    }
}

/// Starts `GET <path>` to an Envoy cluster; the answer arrives in
/// `on_http_call_response` of the context that is active now.
#[allow(unsafe_code)]
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
    let headers = header_map::serialize(&headers);
    let trailers = header_map::serialize::<&str, &str>(&[]);
    let timeout_ms = u32::try_from(timeout_ms).unwrap_or(u32::MAX);
    let mut token: u32 = 0;
    // SAFETY: every pointer is valid for its length during the call and
    // only read (no body: null and 0); `token` is valid for writes.
    let status = unsafe {
        abi::proxy_http_call(
            cluster.as_ptr(),
            cluster.len(),
            headers.as_ptr(),
            headers.len(),
            std::ptr::null(),
            0,
            trailers.as_ptr(),
            trailers.len(),
            timeout_ms,
            &mut token,
        )
    };
    Status::from_raw(status).ok().map(|()| token)
}

/// The `:status` of the call response being handled, if there is one.
/// `num_headers` is what the host reported with the response: `0` means the
/// call failed without a response (reset mid-answer, a body slower than the
/// timeout after the headers came, a buffer limit), and then Envoy has no
/// header map at all (it answers `BadArgument`): it is not asked.
#[allow(unsafe_code)]
pub fn call_response_status(num_headers: usize) -> Option<u16> {
    const STATUS: &[u8] = b":status";
    if num_headers == 0 {
        return None;
    }
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: `STATUS` is valid for its length and only read; `data` and
    // `size` are valid for writes.
    let status = unsafe {
        abi::proxy_get_header_map_value(
            HeaderMap::CallResponse as u32,
            STATUS.as_ptr(),
            STATUS.len(),
            &mut data,
            &mut size,
        )
    };
    let value = returned(status, data, size).ok().flatten()?;
    std::str::from_utf8(&value).ok()?.parse().ok()
}

/// The body of the call response being handled.
pub fn call_response_body(body_size: usize) -> Bytes {
    if body_size == 0 {
        return Bytes::new();
    }
    buffer(BufferType::HttpCallResponseBody, 0, body_size).unwrap_or_default()
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

/// The value under `key` in the Envoy-wide shared data and its CAS (the
/// version a conditional write must name); nothing if there is none or the
/// host refuses.
#[allow(unsafe_code)]
pub fn shared_data(key: &str) -> (Option<Bytes>, Option<u32>) {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    let mut cas: u32 = 0;
    // SAFETY: `key` is valid for its length and only read; `data`, `size`
    // and `cas` are valid for writes.
    let status = unsafe {
        abi::proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas)
    };
    match returned(status, data, size) {
        Ok(value) if Status::from_raw(status) == Status::Ok => (value, (cas != 0).then_some(cas)),
        _ => (None, None),
    }
}

/// Stores `value` under `key`; with `cas`, only if the value is still that
/// version (`CasMismatch` otherwise).
#[allow(unsafe_code)]
pub fn set_shared_data(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), Status> {
    // SAFETY: both pointers are valid for their lengths during the call,
    // and the host only reads them.
    let status = unsafe {
        abi::proxy_set_shared_data(
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
            cas.unwrap_or(0),
        )
    };
    Status::from_raw(status).ok()
}

/// Makes later host calls act on request `context_id`; `false` if that
/// request is gone.
#[allow(unsafe_code)]
pub fn switch_to(context_id: u32) -> bool {
    // SAFETY: no pointers.
    Status::from_raw(unsafe { abi::proxy_set_effective_context(context_id) }) == Status::Ok
}

/// Resumes the current (effective) request. Envoy defers the resumption
/// until this VM call returns, so it is safe from within a callback.
#[allow(unsafe_code)]
pub fn resume_request() {
    // SAFETY: no pointers.
    let _ = unsafe { abi::proxy_continue_stream(abi::STREAM_HTTP_REQUEST) };
}

#[allow(unsafe_code)]
pub fn set_tick_period(period_ms: u64) {
    let period = u32::try_from(period_ms).unwrap_or(u32::MAX);
    // SAFETY: no pointers.
    let _ = unsafe { abi::proxy_set_tick_period_milliseconds(period) };
}

/// Defines a metric; its id, or `None` if the host refuses.
#[allow(unsafe_code)]
pub fn define_metric(kind: MetricType, name: &str) -> Option<u32> {
    let mut id: u32 = 0;
    // SAFETY: `name` is valid for its length and only read; `id` is valid
    // for writes.
    let status =
        unsafe { abi::proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) };
    (Status::from_raw(status) == Status::Ok).then_some(id)
}

/// Adds `offset` to counter `id` (a refused increment loses counts; it
/// must not stop anything).
#[allow(unsafe_code)]
pub fn increment_metric(id: u32, offset: i64) {
    // SAFETY: no pointers.
    let _ = unsafe { abi::proxy_increment_metric(id, offset) };
}

/// Sets gauge `id`.
#[allow(unsafe_code)]
pub fn record_metric(id: u32, value: u64) {
    // SAFETY: no pointers.
    let _ = unsafe { abi::proxy_record_metric(id, value) };
}

/// Writes one line to the host's log.
#[allow(unsafe_code)]
pub fn log(level: abi::LogLevel, message: &str) {
    // SAFETY: `message` is valid for its length and only read.
    let _ = unsafe { abi::proxy_log(level as u32, message.as_ptr(), message.len()) };
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
