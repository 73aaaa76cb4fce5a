//! Text for a terminal: program output made printable, cut to a width,
//! durations written as BuildKit writes them.

use std::time::Duration;

/// A line of program output as one printable line: what a `\r` redraw
/// left visible, ANSI escape sequences and other control characters
/// removed, tabs expanded to 8-column stops.
pub(crate) fn printable(line: &str) -> String {
    // `pip` and `curl` redraw their progress with `\r`: the terminal shows
    // the text after the last one that has any.
    let visible = line
        .rsplit('\r')
        .find(|s| !s.is_empty())
        .unwrap_or_default();
    let mut out = String::with_capacity(visible.len());
    let mut chars = visible.chars().peekable();
    let mut column = 0;
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => skip_escape(&mut chars),
            '\t' => {
                let spaces = 8 - column % 8;
                out.extend(std::iter::repeat_n(' ', spaces));
                column += spaces;
            }
            c if c.is_control() => {}
            c => {
                out.push(c);
                column += char_width(c);
            }
        }
    }
    out
}

/// Skips the rest of an escape sequence (ECMA-48): CSI (`ESC [` … final
/// byte), OSC (`ESC ]` … BEL or `ESC \`), or a two-character one.
fn skip_escape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    match chars.next() {
        Some('[') => {
            for c in chars.by_ref() {
                if ('\x40'..='\x7e').contains(&c) {
                    break;
                }
            }
        }
        Some(']') => {
            while let Some(c) = chars.next() {
                if c == '\x07' {
                    break;
                }
                if c == '\x1b' {
                    chars.next_if_eq(&'\\');
                    break;
                }
            }
        }
        _ => {}
    }
}

/// Whitespace runs (newlines of a heredoc included) as one space.
pub(super) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Columns a character takes on a terminal: 2 for East Asian wide
/// characters and emoji, 0 for combining marks, else 1 (a small table
/// rather than a dependency: a wrong guess only misplaces a line's end).
pub(super) fn char_width(c: char) -> usize {
    match u32::from(c) {
        0x0300..=0x036f | 0x200b..=0x200f | 0xfe00..=0xfe0f => 0,
        0x1100..=0x115f
        | 0x2e80..=0x303e
        | 0x3041..=0x33ff
        | 0x3400..=0x4dbf
        | 0x4e00..=0x9fff
        | 0xa000..=0xa4cf
        | 0xac00..=0xd7a3
        | 0xf900..=0xfaff
        | 0xfe30..=0xfe4f
        | 0xff00..=0xff60
        | 0xffe0..=0xffe6
        | 0x1f300..=0x1f64f
        | 0x1f900..=0x1f9ff
        | 0x20000..=0x3fffd => 2,
        _ => 1,
    }
}

/// Columns a string takes.
pub(super) fn width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

/// `s` cut to at most `max` columns, ending in `…` if it was cut.
pub(super) fn truncate(s: &str, max: usize) -> String {
    if width(s) <= max {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = char_width(c);
        if used + w > max - 1 {
            break;
        }
        out.push(c);
        used += w;
    }
    out.push('…');
    out
}

/// `s` padded with spaces to `columns` (never cut).
pub(super) fn pad(s: &str, columns: usize) -> String {
    let w = width(s);
    let mut out = s.to_string();
    out.extend(std::iter::repeat_n(' ', columns.saturating_sub(w)));
    out
}

/// `12.3s`, as BuildKit's `DONE 12.3s`.
pub(crate) fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// `12.3s` below a minute, `4m05s` above: for the summary, where builds
/// of large images take many minutes.
pub(crate) fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 60 {
        seconds(d)
    } else if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h{:02}m{:02}s", secs / 3600, secs % 3600 / 60, secs % 60)
    }
}
