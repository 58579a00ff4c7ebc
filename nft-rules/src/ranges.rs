//! Interval arithmetic for eligibility: `include` (or everything) minus `exclude`, as sorted,
//! disjoint, non-adjacent inclusive ranges — the form an nftables interval set needs.

/// Inclusive ranges over a value space `0..=max`, with `None` meaning "the whole space".
pub(crate) fn include_minus_exclude(
    include: &[(u128, u128)],
    exclude: &[(u128, u128)],
    max: u128,
) -> Option<Vec<(u128, u128)>> {
    if include.is_empty() && exclude.is_empty() {
        return None;
    }
    let base = if include.is_empty() {
        vec![(0, max)]
    } else {
        normalise(include)
    };
    let cut = normalise(exclude);
    let mut out = Vec::new();
    for (mut lo, hi) in base {
        let mut open = true;
        for &(clo, chi) in cut.iter().take_while(|&&(clo, _)| clo <= hi) {
            if chi < lo {
                continue;
            }
            if clo > lo {
                out.push((lo, clo - 1));
            }
            match chi.checked_add(1) {
                Some(next) if next <= hi => lo = next,
                _ => {
                    open = false;
                    break;
                }
            }
        }
        if open {
            out.push((lo, hi));
        }
    }
    if out == [(0, max)] {
        return None;
    }
    Some(out)
}

/// Sorts ranges and merges overlapping or adjacent ones.
fn normalise(ranges: &[(u128, u128)]) -> Vec<(u128, u128)> {
    let mut sorted = ranges.to_vec();
    sorted.sort_unstable();
    let mut out: Vec<(u128, u128)> = Vec::with_capacity(sorted.len());
    for (lo, hi) in sorted {
        match out.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u128 = 65535;

    #[test]
    fn nothing_configured_means_everything() {
        assert_eq!(include_minus_exclude(&[], &[], MAX), None);
    }

    #[test]
    fn exclude_splits_the_whole_space() {
        let got = include_minus_exclude(&[], &[(22, 22), (0, 0)], MAX);
        assert_eq!(got, Some(vec![(1, 21), (23, MAX)]));
    }

    #[test]
    fn includes_merge_and_excludes_cut_edges() {
        let got = include_minus_exclude(
            &[(10, 20), (21, 30), (100, 200)],
            &[(10, 12), (150, 300)],
            MAX,
        );
        assert_eq!(got, Some(vec![(13, 30), (100, 149)]));
    }

    #[test]
    fn excluding_everything_leaves_nothing() {
        assert_eq!(
            include_minus_exclude(&[(5, 9)], &[(0, MAX)], MAX),
            Some(vec![])
        );
        assert_eq!(include_minus_exclude(&[], &[(0, MAX)], MAX), Some(vec![]));
    }

    #[test]
    fn range_ending_at_max_is_kept() {
        assert_eq!(
            include_minus_exclude(&[(MAX - 1, MAX)], &[], MAX),
            Some(vec![(MAX - 1, MAX)])
        );
        assert_eq!(include_minus_exclude(&[(0, MAX)], &[], MAX), None);
    }

    #[test]
    fn full_u128_space_does_not_overflow() {
        let got = include_minus_exclude(&[], &[(u128::MAX, u128::MAX)], u128::MAX);
        assert_eq!(got, Some(vec![(0, u128::MAX - 1)]));
    }
}
