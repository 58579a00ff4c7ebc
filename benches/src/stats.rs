//! Order statistics for samples.

/// The `p`th percentile (nearest rank) of sorted `samples`; 0 for no samples.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median of `samples` (mean of the middle two for an even count); None when empty.
pub fn median(samples: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 0 {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    })
}

/// The `q` quantile (0 ≤ q ≤ 1, linear between closest ranks) of the finite `samples`; None
/// when there are none.
pub fn quantile(samples: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(v[lo] + (v[hi] - v[lo]) * (pos - lo as f64))
}

/// How widely repeated samples scatter around their median, relative to it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Spread {
    /// Number of samples.
    pub n: usize,
    /// First quartile / median − 1 (negative or zero).
    pub p25: f64,
    /// Third quartile / median − 1 (positive or zero).
    pub p75: f64,
    /// Smallest sample / median − 1.
    pub min: f64,
    /// Largest sample / median − 1.
    pub max: f64,
}

impl Spread {
    /// The spread of `samples`; None without samples or with a median of zero.
    pub fn of(samples: &[f64]) -> Option<Spread> {
        let m = median(samples)?;
        if m == 0.0 {
            return None;
        }
        let rel = |q: f64| quantile(samples, q).map(|v| v / m - 1.0);
        Some(Spread {
            n: samples.iter().filter(|x| x.is_finite()).count(),
            p25: rel(0.25)?,
            p75: rel(0.75)?,
            min: rel(0.0)?,
            max: rel(1.0)?,
        })
    }

    /// Half the interquartile range relative to the median: how far one median of such
    /// samples may be off by chance, roughly.
    pub fn half_iqr(&self) -> f64 {
        (self.p75 - self.p25) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_uses_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
    }

    #[test]
    fn quantiles_interpolate_between_ranks() {
        let v = [4.0, 1.0, 3.0, 2.0, 5.0];
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&v, 0.25), Some(2.0));
        assert_eq!(quantile(&v, 0.5), Some(3.0));
        assert_eq!(quantile(&v, 1.0), Some(5.0));
        assert_eq!(quantile(&[1.0, 2.0], 0.25), Some(1.25));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn spread_is_relative_to_the_median() {
        let s = Spread::of(&[8.0, 9.0, 10.0, 11.0, 14.0]).unwrap();
        assert_eq!(s.n, 5);
        assert!((s.p25 + 0.1).abs() < 1e-12 && (s.p75 - 0.1).abs() < 1e-12);
        assert!((s.min + 0.2).abs() < 1e-12 && (s.max - 0.4).abs() < 1e-12);
        assert!((s.half_iqr() - 0.1).abs() < 1e-12);
        assert_eq!(Spread::of(&[]), None);
        assert_eq!(Spread::of(&[0.0, 0.0]), None);
    }
}
