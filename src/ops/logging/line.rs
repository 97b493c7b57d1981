//! One log line as the relay writes it: time, level, text, cut at
//! [`MAX_LINE`]. Called by the logger for every record, and by the sink,
//! the rotation and the syslog link for the notices they add themselves.

use std::fmt;
use std::time::SystemTime;

use log::Level;

use crate::ops::time;

/// Longest log line kept, in bytes (remote strings are cut far shorter).
pub(super) const MAX_LINE: usize = 8 * 1024;

/// One line as the relay logs it: time, level, text, cut at [`MAX_LINE`].
pub(super) fn format_line(level: Level, text: fmt::Arguments<'_>) -> String {
    let mut line = String::with_capacity(160);
    write_line(&mut line, level, text);
    line
}

/// [`format_line`] into `line` (emptied first): a thread that logs often
/// keeps one buffer instead of a string per line.
pub(super) fn write_line(line: &mut String, level: Level, text: fmt::Arguments<'_>) {
    use fmt::Write;
    line.clear();
    let stamp = time::Stamp::millis(SystemTime::now());
    let _ = write!(line, "{stamp} {level:<5} {text}");
    if line.len() > MAX_LINE {
        let mut cut = MAX_LINE;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push_str("… (line cut)");
    }
    line.push('\n');
}
