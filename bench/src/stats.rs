//! Percentiles and medians.

/// The `p`-th percentile (0-100, nearest rank) of `sorted`, or `None` when it is empty.
pub fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    // Nearest rank: the smallest rank r with r >= p% of len, counted in whole numbers.
    let len = sorted.len();
    let per_mille = (p.clamp(0.0, 100.0) * 10.0).round();
    let mut rank = 1;
    while rank < len && (rank as f64) * 1000.0 < per_mille * len as f64 {
        rank += 1;
    }
    sorted.get(rank - 1).copied()
}

/// The index of the median of `values` (the lower one for an even count), or `None` if empty.
pub fn median_index(values: &[f64]) -> Option<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    order.get((values.len().checked_sub(1)?) / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7], 99.0), Some(7));
    }

    #[test]
    fn medians() {
        assert_eq!(median_index(&[3.0, 1.0, 2.0]), Some(2));
        assert_eq!(median_index(&[]), None);
    }
}
