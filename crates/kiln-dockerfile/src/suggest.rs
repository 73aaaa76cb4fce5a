//! "Did you mean ...?" hints, as BuildKit's `util/suggest` gives them.
//!
//! The nearest option by Levenshtein distance (over characters) wins if it is
//! at most 2 edits away, the threshold BuildKit took from HCL. An option equal
//! to the value means the value was not the problem, so nothing is suggested.
//! BuildKit walks its options in Go map order, so between two equally near
//! options its pick can change from run to run; here options are tried in
//! byte order and the first of the nearest wins, every time.

/// The option to suggest for `value`, if one is near enough. Without
/// `case_sensitive`, comparison is on lower-cased text and the suggestion
/// takes the value's case when the value is all lower or all upper case.
pub(crate) fn suggest(value: &str, options: &[&str], case_sensitive: bool) -> Option<String> {
    let fold = |s: &str| {
        if case_sensitive {
            s.to_string()
        } else {
            s.to_lowercase()
        }
    };
    let wanted = fold(value);
    let mut candidates: Vec<String> = options.iter().map(|o| fold(o)).collect();
    candidates.sort();
    if candidates.contains(&wanted) {
        return None;
    }
    let mut best: Option<(usize, String)> = None;
    for candidate in candidates {
        let distance = levenshtein(&wanted, &candidate);
        if distance < best.as_ref().map_or(3, |(d, _)| *d) {
            best = Some((distance, candidate));
        }
    }
    let (_, found) = best?;
    if case_sensitive {
        return Some(found);
    }
    Some(if value == value.to_lowercase() {
        found.to_lowercase()
    } else if value == value.to_uppercase() {
        found.to_uppercase()
    } else {
        found
    })
}

/// Edit distance with unit costs for insertion, deletion and substitution.
fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            let cost = usize::from(ca != *cb);
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + cost);
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("mont", "mount"), 1);
        assert_eq!(levenshtein("tmp", "tmpfs"), 2);
    }

    #[test]
    fn nearest_within_two_edits() {
        let instructions = ["RUN", "COPY", "ENTRYPOINT", "ENV"];
        assert_eq!(
            suggest("RUNN", &instructions, false).as_deref(),
            Some("RUN")
        );
        assert_eq!(
            suggest("runn", &instructions, false).as_deref(),
            Some("run")
        );
        // Mixed case: the option as compared, i.e. lower case.
        assert_eq!(
            suggest("Runn", &instructions, false).as_deref(),
            Some("run")
        );
        assert_eq!(
            suggest("FNTRYPOINT", &instructions, false).as_deref(),
            Some("ENTRYPOINT")
        );
        assert_eq!(suggest("XXXXXX", &instructions, false), None);
        assert_eq!(suggest("run", &instructions, false), None);
        assert_eq!(suggest("Mount", &["mount"], true).as_deref(), Some("mount"));
    }

    #[test]
    fn ties_go_to_the_first_in_byte_order() {
        assert_eq!(suggest("ab", &["ac", "aa"], true).as_deref(), Some("aa"));
        assert_eq!(suggest("ab", &["aa", "ac"], true).as_deref(), Some("aa"));
    }
}
