//! What an OCI runtime said: the error in its JSON log (`--log-format
//! json`), read by the daemon after a failed command and by the monitor
//! after a failed create.

/// The last error in a runtime's JSON log (`--log-format json`). runc and
/// runsc write `{"level":"error","msg":…}`, youki `{"level":"ERROR",
/// "message":…}` with a backtrace after the message.
pub fn last_logged_error(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v.get("level")
                .and_then(|l| l.as_str())
                .is_some_and(|l| l.eq_ignore_ascii_case("error"))
        })
        .filter_map(|v| {
            v.get("msg")
                .or_else(|| v.get("message"))
                .and_then(|m| m.as_str())
                .map(first_paragraph)
        })
        .next_back()
}

/// A runtime's message up to its first blank line: what follows is
/// youki's backtrace (printed when RUST_BACKTRACE is set), or runsc's list
/// of commands after its usage line.
pub fn first_paragraph(said: &str) -> String {
    said.split("\n\n").next().unwrap_or(said).trim().to_string()
}
