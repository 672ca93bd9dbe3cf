//! `log` lines to the host's log (`proxy_log`), at info and above: debug
//! lines are not compiled into the release `.wasm` (`log`'s
//! `release_max_level_info`), and the level is the same in every build.

use crate::abi::LogLevel;
use crate::host;

struct HostLogger;

static LOGGER: HostLogger = HostLogger;

/// Makes `log` write to the host (once per VM, from `_initialize`).
pub fn install() {
    // Fails only if a logger is set already: this one, then.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
}

impl log::Log for HostLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Trace => LogLevel::Trace,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Info => LogLevel::Info,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Error => LogLevel::Error,
        };
        host::log(level, &record.args().to_string());
    }

    fn flush(&self) {}
}
