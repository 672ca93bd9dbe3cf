//! `sandbox-router-manifests`: checks the repository's manifests, and prints
//! the shipped `pluginConfig`.
//!
//! ```text
//! sandbox-router-manifests check [--core-files FILE] PATH...
//! sandbox-router-manifests plugin-config [WASMPLUGIN_YAML]
//! ```
//!
//! Exit codes: 0 all good; 1 a problem was found; 2 bad command line.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use sandbox_router_manifests::check::{check_paths, Class};
use sandbox_router_manifests::crd::CrdSchemas;
use sandbox_router_manifests::plugin_config_json;

const USAGE: &str = "usage:
  sandbox-router-manifests check [--core-files FILE] PATH...
      Validate every YAML document under PATH (files or directories): Istio
      resources against Istio's CRD schemas, kustomizations by what they
      reference; core Kubernetes kinds are listed (one file a line) in FILE
      for kubernetes-validate. Unknown kinds are errors.
  sandbox-router-manifests plugin-config [FILE]
      Print the pluginConfig of the WasmPlugin in FILE (default
      wasmplugin/wasmplugin.yaml) as the JSON the filter receives.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("check") => check(args.get(1..).unwrap_or_default()),
        Some("plugin-config") => {
            let path = args
                .get(1)
                .map_or("wasmplugin/wasmplugin.yaml", String::as_str);
            match plugin_config_json(path) {
                Ok(json) => {
                    println!("{json}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("sandbox-router-manifests: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn check(args: &[String]) -> ExitCode {
    let mut core_files_out: Option<PathBuf> = None;
    let mut roots = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--core-files" {
            let Some(file) = iter.next() else {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            };
            core_files_out = Some(PathBuf::from(file));
        } else {
            roots.push(PathBuf::from(arg));
        }
    }
    if roots.is_empty() {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }

    let (report, documents) = check_paths(&roots, CrdSchemas::istio());
    for error in &report.file_errors {
        println!("FAIL {error}");
    }
    for finding in &report.findings {
        let class = finding.class.map_or("?".to_owned(), |c| c.to_string());
        if finding.problems.is_empty() {
            let note = if finding.class == Some(Class::Core) {
                " (schema: kubernetes-validate)"
            } else {
                ""
            };
            println!("ok   [{class}] {}{note}", finding.document);
        } else {
            println!("FAIL [{class}] {}", finding.document);
            for problem in &finding.problems {
                println!("       {problem}");
            }
        }
    }
    if let Some(out) = core_files_out {
        let list: String = report
            .core_files(&documents)
            .iter()
            .map(|p| format!("{}\n", p.display()))
            .collect();
        let written = std::fs::File::create(&out).and_then(|mut f| f.write_all(list.as_bytes()));
        if let Err(e) = written {
            eprintln!("sandbox-router-manifests: {}: {e}", out.display());
            return ExitCode::FAILURE;
        }
    }
    let problems = report.problem_count();
    println!(
        "sandbox-router-manifests: {} files, {} documents ({} Istio, {} core, {} kustomize, {} kind): {}",
        report.files.len(),
        report.findings.len(),
        report.count(Class::Istio),
        report.count(Class::Core),
        report.count(Class::Kustomization),
        report.count(Class::KindCluster),
        if problems == 0 {
            "all valid".to_owned()
        } else {
            format!("{problems} problems")
        }
    );
    if problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
