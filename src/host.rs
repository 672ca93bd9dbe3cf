//! The host calls the filter makes, with host statuses turned into values
//! the filter can act on. Nothing here decides anything.

use proxy_wasm::hostcalls;
use proxy_wasm::types::{Bytes, MapType, Status};

/// Request headers as Envoy holds them: names lower case, values raw bytes.
/// (The SDK's `String` getter panics on a value that is not UTF-8, which a
/// client can send; the bytes getter cannot.)
pub fn request_headers() -> Vec<(String, Bytes)> {
    hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default()
}

/// The cluster of the route Envoy has chosen so far, if the host says.
/// Envoy 1.40 answers `xds.cluster_name` in the request-headers phase; older
/// hosts name it `cluster_name`.
pub fn route_cluster_name() -> Option<String> {
    [vec!["xds", "cluster_name"], vec!["cluster_name"]]
        .into_iter()
        .find_map(|path| hostcalls::get_property(path).ok().flatten())
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|name| !name.is_empty())
}

pub fn set_request_header(name: &str, value: &str) -> Result<(), Status> {
    hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value))
}

pub fn remove_request_header(name: &str) -> Result<(), Status> {
    hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None)
}

/// Whether the route cache was cleared; `false` where the host does not
/// offer `clear_route_cache` (Envoy also clears it on header changes made
/// through the proxy-wasm ABI, so routing still sees the change there).
pub fn clear_route_cache() -> bool {
    hostcalls::call_foreign_function("clear_route_cache", None).is_ok()
}

/// The plugin configuration bytes (empty when there is none).
pub fn plugin_configuration() -> Bytes {
    hostcalls::get_buffer(
        proxy_wasm::types::BufferType::PluginConfiguration,
        0,
        usize::MAX,
    )
    .ok()
    .flatten()
    .unwrap_or_default()
}
