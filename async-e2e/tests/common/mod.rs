//! What every live pull run must show, whatever the broker.

use sandbox_router_async_e2e::analysis::report::Report;

/// Exactly once everywhere except inside the measured windows, and never
/// by nobody even there; both consumers observed both changes; the report
/// names the broker.
pub fn check_live(report: &Report) {
    println!("{report}");
    assert!(report.problems.is_empty(), "{report}");
    assert_eq!(report.all.messages, 3000);
    assert_eq!(report.windows.len(), 2);
    for window in &report.windows {
        assert_eq!(window.latencies.len(), 2, "{report}");
    }
    // Only the changing sandbox's key can differ, and only in a window.
    assert_eq!(report.outside.differing(), 0);
    // None lost (issue 13): a message may be processed twice inside a
    // window (at least once), never by nobody, whichever consumer sees a
    // change first.
    assert_eq!(
        report.all.never, 0,
        "messages processed by nobody\n{report}"
    );
    let hand_back = report.hand_back.unwrap_or_default();
    assert_eq!(hand_back.lost, 0, "hand back lost messages\n{report}");
    let in_windows: u64 = report.windows.iter().map(|w| w.touching.differing()).sum();
    assert_eq!(in_windows, report.all.differing(), "{report}");
    // The sandbox existed for a whole phase: its fork processed messages.
    assert!(report.processed_by[1].1 > 0, "{report}");
    assert!(report.hand_back.is_some(), "{report}");
    assert!(
        report.notes.iter().any(|n| n.starts_with("broker: ")),
        "{report}"
    );
}
