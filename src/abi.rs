//! The proxy-wasm ABI (0.2.1) as this filter uses it: the host functions it
//! imports, and the status and enum values they take. Each import returns
//! the host's status as a plain `u32` ([`Status::from_raw`]): a host may
//! answer a status this module does not know, which must become a value,
//! not undefined behaviour or a panic (the proxy-wasm SDK declares it as a
//! Rust enum and panics on any status it does not expect).
//!
//! Only [`crate::host`] calls these; the callbacks the host makes into the
//! module are in [`crate::exports`].

/// A host call's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    NotFound,
    BadArgument,
    SerializationFailure,
    ParseFailure,
    Empty,
    CasMismatch,
    InternalFailure,
    Unimplemented,
    /// A status this ABI version does not name.
    Other(u32),
}

impl Status {
    pub fn from_raw(raw: u32) -> Self {
        match raw {
            0 => Status::Ok,
            1 => Status::NotFound,
            2 => Status::BadArgument,
            3 => Status::SerializationFailure,
            4 => Status::ParseFailure,
            7 => Status::Empty,
            8 => Status::CasMismatch,
            10 => Status::InternalFailure,
            12 => Status::Unimplemented,
            other => Status::Other(other),
        }
    }

    /// `Ok(())` for [`Status::Ok`], the status otherwise.
    pub fn ok(self) -> Result<(), Status> {
        match self {
            Status::Ok => Ok(()),
            status => Err(status),
        }
    }
}

/// What a header callback tells the host to do with the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue = 0,
    /// Stop until the module resumes the stream.
    Pause = 1,
}

/// Which header map a call acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderMap {
    Request = 0,
    Response = 2,
    /// The response to a `dispatch_http_call`.
    CallResponse = 6,
}

/// Which buffer a call reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferType {
    HttpCallResponseBody = 4,
    PluginConfiguration = 7,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter = 0,
    Gauge = 1,
}

/// `proxy_log`'s levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
}

/// `proxy_continue_stream`'s stream: the request of the effective context.
pub const STREAM_HTTP_REQUEST: u32 = 0;

#[link(wasm_import_module = "env")]
extern "C" {
    pub fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    pub fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    pub fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    pub fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    pub fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    pub fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    pub fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    pub fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    pub fn proxy_remove_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
    ) -> u32;
    pub fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    pub fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    pub fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    pub fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    pub fn proxy_continue_stream(stream_type: u32) -> u32;
    #[allow(clippy::too_many_arguments)]
    pub fn proxy_http_call(
        upstream_data: *const u8,
        upstream_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        body_data: *const u8,
        body_size: usize,
        trailers_data: *const u8,
        trailers_size: usize,
        timeout_ms: u32,
        return_token: *mut u32,
    ) -> u32;
    pub fn proxy_set_effective_context(context_id: u32) -> u32;
    pub fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    pub fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    pub fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_unknown_ones_are_values() {
        for (raw, status) in [
            (0, Status::Ok),
            (1, Status::NotFound),
            (2, Status::BadArgument),
            (8, Status::CasMismatch),
            (12, Status::Unimplemented),
        ] {
            assert_eq!(Status::from_raw(raw), status);
        }
        assert_eq!(Status::from_raw(6), Status::Other(6));
        assert_eq!(Status::from_raw(u32::MAX), Status::Other(u32::MAX));
        assert_eq!(Status::Ok.ok(), Ok(()));
        assert_eq!(Status::NotFound.ok(), Err(Status::NotFound));
    }
}
