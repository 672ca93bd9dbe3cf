//! Fuzz the plugin configuration parser.
//!
//! Invariants, whatever the bytes:
//! - `FilterConfig::from_json` never panics, and answers as
//!   `FilterConfig::from_json_by_derive` (the document read by
//!   `PluginConfig`'s serde derive instead of by hand): the same config, or
//!   the same error with the same message at the same field;
//! - a refused configuration yields a pass-through whose route header is a
//!   valid route header (`PassThrough::for_refused` never panics either);
//! - a configuration it accepts parses the same way again;
//! - written back out as JSON (`PluginConfig`'s `Serialize`), an accepted
//!   configuration is accepted again and means the same (no field is lost,
//!   renamed or re-defaulted on the way out).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sandbox_router_core::config::{FilterConfig, PassThrough, PluginConfig};

fuzz_target!(|data: &[u8]| {
    let parsed = FilterConfig::from_json(data);
    assert_eq!(
        parsed,
        FilterConfig::from_json_by_derive(data),
        "read by hand and by the derive differently"
    );
    let Ok(config) = parsed else {
        let pass = PassThrough::for_refused(data);
        let only_header = serde_json::json!({ "routeHeader": pass.route_header });
        assert!(
            FilterConfig::from_json(only_header.to_string().as_bytes()).is_ok(),
            "pass-through route header {:?} is not a valid routeHeader",
            pass.route_header
        );
        return;
    };
    assert_eq!(
        FilterConfig::from_json(data).as_ref(),
        Ok(&config),
        "the same JSON parsed twice into different configs"
    );

    // The document as the user wrote it; no input at all means all defaults.
    let plugin: PluginConfig = if data.iter().all(u8::is_ascii_whitespace) {
        PluginConfig::default()
    } else {
        let document: serde_json::Value =
            serde_json::from_slice(data).expect("from_json accepted it as JSON");
        serde_json::from_value(document).expect("from_json accepted it as a PluginConfig")
    };
    assert_eq!(plugin.clone().validate().as_ref(), Ok(&config));

    let written = serde_json::to_vec(&plugin).expect("a PluginConfig serialises");
    assert_eq!(
        FilterConfig::from_json(&written).as_ref(),
        Ok(&config),
        "the config written back out as {} parses differently",
        String::from_utf8_lossy(&written)
    );
});
