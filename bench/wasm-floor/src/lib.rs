//! `wasm_floor`: the cost any Rust proxy-wasm filter pays per request. It
//! reads one request header (`baggage`) through the host and continues, so
//! `make bench` can tell the Wasm floor apart from what sandbox-router adds.
//!
//! With a configuration `<probe> <count>` (the `probe_*` scenarios of
//! `make bench-callgrind`), each request also makes `count` host calls of
//! one kind, so that (probe - floor) / count is what one such call costs:
//! the price list the filter's per-request work is made of. Without a
//! configuration (the `wasm_floor` scenarios) it makes none.
//!
//! With `routed <header> <value>` (the `wasm_floor_routed*` scenarios) it
//! makes, in the same callbacks, the host calls sandbox-router makes for a
//! request it routes, and decides nothing: the request headers read as one
//! buffer (instead of the one `baggage` read), the chosen cluster, an absent
//! shared-data value (the fork's unreachable record), `<header>: <value>`
//! set (Envoy clears the route cache itself); once the router has chosen,
//! the cluster again (the check) and two filter state values (the
//! access-log fields).
//! For a route without a cluster (the bench's `direct_response`), what the
//! filter does there: `xds.route_name` instead of the shared-data read, and
//! the filter state at once, with nothing to check.
//! Every request goes where `<header>` sends it, so `router_hit` over this
//! floor is what the filter's own work costs a routed request.
//!
//! With `marked <header> <value>` (the `wasm_floor_marked*` scenarios) it
//! reads `baggage` as the floor does and sets `<header>: <value>`, nothing
//! else: the least any Wasm filter can do to route a request by a header
//! (read the key, set the header; Envoy then selects the route again). No
//! check that the request reached the fork, no access-log field, no
//! decision: what issue 12's routed goals against `wasm_floor` would need
//! a filter to cost at most.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};
use sandbox_router_core::header_map;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(FloorRoot::default()) });
}}

/// One kind of host call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// `get_header_map_value` of a header the request does not have.
    HeaderAbsent,
    /// `get_header_map_value` of `baggage` (300 bytes), bytes getter.
    HeaderPresent,
    /// The same through the SDK's `String` getter (a UTF-8 check), as the
    /// floor reads it once.
    HeaderPresentString,
    /// `get_header_map_value` of `:authority` (31 bytes), bytes getter.
    Authority,
    /// `get_property(request.headers.baggage)`: every `baggage` line, joined.
    HeaderAttribute,
    /// `get_property(xds.cluster_name)`: the chosen route's cluster.
    ClusterProperty,
    /// `increment_metric` of a counter.
    IncrementMetric,
    /// `set_property` of a filter state value (an access-log field).
    SetFilterState,
    /// `get_shared_data` of a key that holds 40 bytes.
    SharedData,
    /// `get_shared_data` of a key that holds nothing.
    SharedDataAbsent,
    /// `get_header_map_pairs`: every request header, as the SDK hands them
    /// over (a `String` and a `Vec` per header).
    HeaderMap,
    /// `get_header_map_pairs` read as the host hands it over: one buffer,
    /// walked in place for the `baggage` lines, nothing allocated per header.
    HeaderMapRaw,
    /// `set_header_map_value` of a request header.
    SetHeader,
    /// `call_foreign_function("clear_route_cache")`.
    ClearRouteCache,
    /// `get_current_time_nanoseconds`.
    Clock,
}

impl Probe {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "header_absent" => Probe::HeaderAbsent,
            "header_present" => Probe::HeaderPresent,
            "header_present_string" => Probe::HeaderPresentString,
            "authority" => Probe::Authority,
            "header_attribute" => Probe::HeaderAttribute,
            "cluster_property" => Probe::ClusterProperty,
            "increment_metric" => Probe::IncrementMetric,
            "set_filter_state" => Probe::SetFilterState,
            "shared_data" => Probe::SharedData,
            "shared_data_absent" => Probe::SharedDataAbsent,
            "header_map" => Probe::HeaderMap,
            "header_map_raw" => Probe::HeaderMapRaw,
            "set_header" => Probe::SetHeader,
            "clear_route_cache" => Probe::ClearRouteCache,
            "clock" => Probe::Clock,
            _ => return None,
        })
    }

    fn call(self, metric: u32) {
        match self {
            Probe::HeaderAbsent => {
                std::hint::black_box(
                    hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, "x-absent").ok(),
                );
            }
            Probe::HeaderPresent => {
                std::hint::black_box(
                    hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, "baggage").ok(),
                );
            }
            Probe::HeaderPresentString => {
                std::hint::black_box(
                    hostcalls::get_map_value(MapType::HttpRequestHeaders, "baggage").ok(),
                );
            }
            Probe::Authority => {
                std::hint::black_box(
                    hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, ":authority").ok(),
                );
            }
            Probe::HeaderAttribute => {
                std::hint::black_box(
                    hostcalls::get_property(vec!["request", "headers", "baggage"]).ok(),
                );
            }
            Probe::ClusterProperty => {
                std::hint::black_box(hostcalls::get_property(vec!["xds", "cluster_name"]).ok());
            }
            Probe::IncrementMetric => {
                let _ = hostcalls::increment_metric(metric, 1);
            }
            Probe::SetFilterState => {
                let _ = hostcalls::set_property(vec!["probe.outcome"], Some(b"no_key"));
            }
            Probe::SharedData => {
                std::hint::black_box(hostcalls::get_shared_data(SHARED_KEY).ok());
            }
            Probe::SharedDataAbsent => {
                std::hint::black_box(hostcalls::get_shared_data("wasm-floor.absent").ok());
            }
            Probe::HeaderMap => {
                std::hint::black_box(hostcalls::get_map_bytes(MapType::HttpRequestHeaders).ok());
            }
            Probe::HeaderMapRaw => {
                std::hint::black_box(raw_header_map_baggage_bytes());
            }
            Probe::SetHeader => {
                let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, "x-probe", Some("1"));
            }
            Probe::ClearRouteCache => {
                let _ = hostcalls::call_foreign_function("clear_route_cache", None);
            }
            Probe::Clock => {
                std::hint::black_box(hostcalls::get_current_time().ok());
            }
        }
    }
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
}

/// The request headers in the host's serialization, read in place by the
/// filter's own reader: the bytes of its `baggage` lines.
fn raw_header_map_baggage_bytes() -> usize {
    let buffer = raw_header_map();
    header_map::pairs(&buffer)
        .unwrap_or_default()
        .iter()
        .filter(|(name, _)| *name == b"baggage")
        .map(|(_, value)| value.len())
        .sum()
}

/// The request headers as the host hands them over: one buffer, as the
/// filter reads them (empty if the host refuses).
#[allow(unsafe_code)]
fn raw_header_map() -> Vec<u8> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a buffer it allocated through this module's
    // `proxy_on_memory_allocate` (a `Vec<u8>` of capacity `size`), which is
    // taken back as that `Vec` and freed when it goes out of scope.
    unsafe {
        if proxy_get_header_map_pairs(MapType::HttpRequestHeaders, &mut data, &mut size) != 0
            || data.is_null()
        {
            return Vec::new();
        }
        Vec::from_raw_parts(data, size, size)
    }
}

const SHARED_KEY: &str = "wasm-floor.probe";

/// The route header and its value, for `routed` and `marked`.
#[derive(Debug, Clone)]
struct Routed {
    header: String,
    value: String,
}

impl Routed {
    /// The request phase of a routed request, as the filter makes it:
    /// read the headers (one buffer) and the chosen cluster, then
    /// - with a cluster (every route of a mesh): look for the fork's
    ///   unreachable record (none), mark, and check the marking once the
    ///   router has chosen (`true`);
    /// - without one (`direct_response`): ask whether there is a route at
    ///   all, mark, and write the outcome at once: nothing is checked (no
    ///   cluster to check against).
    ///
    /// Marking is setting the header: Envoy selects the route again on its
    /// own for a module of ABI 0.2.1 (this one, like sandbox-router).
    fn on_request(&self) -> bool {
        std::hint::black_box(raw_header_map());
        let cluster = hostcalls::get_property(vec!["xds", "cluster_name"])
            .ok()
            .flatten();
        let checked = cluster.is_some();
        std::hint::black_box(cluster);
        if checked {
            std::hint::black_box(hostcalls::get_shared_data("wasm-floor.absent").ok());
        } else {
            std::hint::black_box(hostcalls::get_property(vec!["xds", "route_name"]).ok());
        }
        let _ =
            hostcalls::set_map_value(MapType::HttpRequestHeaders, &self.header, Some(&self.value));
        if !checked {
            self.record();
        }
        checked
    }

    /// The response phase of a checked marking: the cluster the router
    /// used, then the outcome.
    fn on_response(&self) {
        std::hint::black_box(hostcalls::get_property(vec!["xds", "cluster_name"]).ok());
        self.record();
    }

    /// The outcome and the sandbox as filter state (the access-log fields).
    fn record(&self) {
        let _ = hostcalls::set_property(vec!["wasm_floor.outcome"], Some(b"routed"));
        let _ = hostcalls::set_property(vec!["wasm_floor.sandbox"], Some(self.value.as_bytes()));
    }
}

#[derive(Default)]
struct FloorRoot {
    probe: Option<(Probe, u32)>,
    routed: Option<Routed>,
    /// `marked`: the header set on every request, after the floor's read.
    marked: Option<Routed>,
    metric: u32,
}

impl Context for FloorRoot {}

impl RootContext for FloorRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&config);
        let mut words = text.split_whitespace();
        let first = words.next();
        if let Some(mode @ ("routed" | "marked")) = first {
            let header = words
                .next()
                .zip(words.next())
                .map(|(header, value)| Routed {
                    header: header.to_owned(),
                    value: value.to_owned(),
                });
            let configured = header.is_some();
            if mode == "routed" {
                self.routed = header;
            } else {
                self.marked = header;
            }
            return configured;
        }
        self.probe = first
            .and_then(Probe::parse)
            .zip(words.next().and_then(|n| n.parse().ok()));
        if self.probe.is_some() {
            self.metric = hostcalls::define_metric(MetricType::Counter, "wasm_floor.probe")
                .unwrap_or_default();
            let _ = hostcalls::set_shared_data(SHARED_KEY, Some(&[b'x'; 40]), None);
        }
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Floor {
            probe: self.probe,
            routed: self.routed.clone(),
            marked: self.marked.clone(),
            checked: false,
            metric: self.metric,
        }))
    }
}

struct Floor {
    probe: Option<(Probe, u32)>,
    routed: Option<Routed>,
    marked: Option<Routed>,
    /// `routed`: this request's marking is checked in the response phase.
    checked: bool,
    metric: u32,
}

impl Context for Floor {}

impl HttpContext for Floor {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(routed) = &self.routed {
            self.checked = routed.on_request();
            return Action::Continue;
        }
        // Read the header and look at it, so the read cannot be optimised away.
        std::hint::black_box(self.get_http_request_header("baggage"));
        if let Some(marked) = &self.marked {
            self.set_http_request_header(&marked.header, Some(&marked.value));
        }
        if let Some((probe, count)) = self.probe {
            for _ in 0..count {
                probe.call(self.metric);
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let (Some(routed), true) = (&self.routed, self.checked) {
            routed.on_response();
        }
        Action::Continue
    }
}
