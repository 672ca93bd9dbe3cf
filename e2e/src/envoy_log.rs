//! Reading Envoy's log for signs that the plugin misbehaved.
//!
//! Envoy prefixes every line with `[time][thread][level][component]`. A plugin's
//! own log calls come out as `[wasm] ... wasm log <plugin> <root> <vm>: <message>`
//! at the level the plugin chose; VM failures (traps, panics, failing
//! callbacks) are logged by Envoy's wasm component at error or critical.

/// Lines of `log` that show the plugin failing: any error/critical line from
/// Envoy's wasm component, a Rust panic, a wasm trap, a failed `proxy_on_*`
/// callback, or a fail-closed plugin.
pub fn plugin_problems(log: &str) -> Vec<&str> {
    log.lines().filter(|line| is_plugin_problem(line)).collect()
}

fn is_plugin_problem(line: &str) -> bool {
    let wasm_error =
        line.contains("[wasm]") && (line.contains("[error]") || line.contains("[critical]"));
    const SIGNS: [&str; 5] = [
        "panicked",
        "wasm trap",
        "Function: proxy_on_",
        "Plugin configured to fail closed",
        "Wasm VM failed",
    ];
    wasm_error || SIGNS.iter().any(|sign| line.contains(sign))
}

/// The lines the plugin itself logged (`wasm log ...`), any level.
pub fn plugin_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|line| line.contains("wasm log"))
        .collect()
}

/// The last `n` lines of `log`, for error messages.
pub fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let skip = lines.len().saturating_sub(n);
    lines
        .iter()
        .skip(skip)
        .copied()
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spots_plugin_failures_and_ignores_normal_lines() {
        let log = "\
[2026-01-01 00:00:00.000][1][info][wasm] [context.cc:1157] wasm log a  : sandbox-router: configured
[2026-01-01 00:00:00.000][1][error][wasm] [context.cc:1157] wasm log a  : sandbox-router: invalid configuration: mode
[2026-01-01 00:00:00.000][1][critical][wasm] [wasm.cc:479] Plugin configured to fail closed failed to load
[2026-01-01 00:00:00.000][1][info][main] [server.cc:1] starting main dispatch loop
[2026-01-01 00:00:00.000][1][error][envoy_bug] panicked at src/lib.rs:1:1
";
        let problems = plugin_problems(log);
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert_eq!(plugin_lines(log).len(), 2);
        assert_eq!(
            tail(log, 1),
            "[2026-01-01 00:00:00.000][1][error][envoy_bug] panicked at src/lib.rs:1:1"
        );
    }
}
