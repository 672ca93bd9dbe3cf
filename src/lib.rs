//! sandbox-router: the proxy-wasm HTTP filter.
//!
//! A thin layer over [`sandbox_router_core`]: it reads what the core needs
//! from Envoy (request headers, the chosen cluster, the plugin
//! configuration), applies the core's decision (route header, `:authority`,
//! route cache), and counts the outcome. All policy lives in the core.

mod edge;
mod filter;
mod host;
mod metrics;
mod pass_through;
mod root;
mod table_sync;
mod worker;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    // panic = "abort" already kills the VM; the hook makes the reason visible
    // in Envoy's log instead of a bare Wasm trap.
    // Where, not the payload: formatting any payload would pull a good
    // part of `std`'s formatting into the `.wasm` for a path never taken.
    std::panic::set_hook(Box::new(|info| match info.location() {
        Some(at) => log::error!("sandbox-router: panic at {}:{}", at.file(), at.line()),
        None => log::error!("sandbox-router: panic"),
    }));
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::Root::default())
    });
}}
