//! `Extents`: a sorted set of byte ranges, the used-block map of a partition.

use serde::Serialize;

/// Sorted, non-overlapping, non-touching byte ranges `(start, len)`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Extents {
    runs: Vec<(u64, u64)>,
}

impl Extents {
    /// An empty set.
    pub fn new() -> Extents {
        Extents::default()
    }

    /// One range.
    pub fn single(start: u64, len: u64) -> Extents {
        let mut e = Extents::new();
        e.add(start, len);
        e
    }

    /// Builds from ranges in any order; overlaps and touching ranges merge.
    pub fn from_unsorted(mut runs: Vec<(u64, u64)>) -> Extents {
        runs.retain(|r| r.1 > 0);
        runs.sort_unstable();
        let mut e = Extents::new();
        for (s, l) in runs {
            e.add(s, l);
        }
        e
    }

    /// Adds a range. Fast when ranges come in ascending order (the common case); otherwise
    /// falls back to a re-sort.
    pub fn add(&mut self, start: u64, len: u64) {
        if len == 0 {
            return;
        }
        let end = start.saturating_add(len);
        match self.runs.last_mut() {
            None => self.runs.push((start, end - start)),
            Some(last) => {
                let last_end = last.0 + last.1;
                if start >= last.0 && start <= last_end {
                    if end > last_end {
                        last.1 = end - last.0;
                    }
                } else if start > last_end {
                    self.runs.push((start, end - start));
                } else {
                    let mut runs = std::mem::take(&mut self.runs);
                    runs.push((start, end - start));
                    *self = Extents::from_unsorted(runs);
                }
            }
        }
    }

    /// Adds every set bit of an LSB-first bitmap: bit `i` covers
    /// `[base + i*unit, base + (i+1)*unit)`, for `i < nbits`.
    pub fn add_bitmap(&mut self, bitmap: &[u8], nbits: u64, base: u64, unit: u64) {
        let mut i = 0u64;
        while i < nbits {
            let byte = bitmap.get((i / 8) as usize).copied().unwrap_or(0);
            if i % 8 == 0 && (byte == 0 || byte == 0xFF) && i + 8 <= nbits {
                if byte == 0xFF {
                    self.add(base + i * unit, 8 * unit);
                }
                i += 8;
                continue;
            }
            if byte & (1 << (i % 8)) != 0 {
                self.add(base + i * unit, unit);
            }
            i += 1;
        }
    }

    /// Removes everything at or after `limit`.
    pub fn clip(&mut self, limit: u64) {
        self.runs.retain(|r| r.0 < limit);
        if let Some(last) = self.runs.last_mut() {
            if last.0 + last.1 > limit {
                last.1 = limit - last.0;
            }
        }
    }

    /// The ranges.
    pub fn runs(&self) -> &[(u64, u64)] {
        &self.runs
    }

    /// Total bytes covered.
    pub fn total(&self) -> u64 {
        self.runs.iter().map(|r| r.1).sum()
    }

    /// Number of ranges.
    pub fn len(&self) -> usize {
        self.runs.len()
    }

    /// True when nothing is covered.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// One past the last covered byte.
    pub fn end(&self) -> u64 {
        self.runs.last().map(|r| r.0 + r.1).unwrap_or(0)
    }

    /// Union with another set.
    pub fn union(&self, other: &Extents) -> Extents {
        let mut all = self.runs.clone();
        all.extend_from_slice(&other.runs);
        Extents::from_unsorted(all)
    }

    /// Builds from already-validated runs (sorted, disjoint): used by the image reader.
    pub fn from_sorted_runs(runs: Vec<(u64, u64)>) -> Option<Extents> {
        let mut prev_end: Option<u64> = None;
        for &(s, l) in &runs {
            if l == 0 {
                return None;
            }
            s.checked_add(l)?;
            if let Some(pe) = prev_end {
                if s <= pe {
                    return None;
                }
            }
            prev_end = Some(s + l);
        }
        Some(Extents { runs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_merges() {
        let mut e = Extents::new();
        e.add(0, 10);
        e.add(10, 5);
        e.add(20, 5);
        e.add(22, 10);
        assert_eq!(e.runs(), &[(0, 15), (20, 12)]);
        e.add(5, 20);
        assert_eq!(e.runs(), &[(0, 32)]);
        e.add(100, 1);
        e.add(50, 1);
        assert_eq!(e.runs(), &[(0, 32), (50, 1), (100, 1)]);
        assert_eq!(e.total(), 34);
    }

    #[test]
    fn bitmap() {
        let mut e = Extents::new();
        e.add_bitmap(&[0b0000_0110, 0xFF, 0x01], 17, 1000, 4);
        assert_eq!(e.runs(), &[(1004, 8), (1032, 36)]);
        let mut c = e.clone();
        c.clip(1040);
        assert_eq!(c.runs(), &[(1004, 8), (1032, 8)]);
    }

    #[test]
    fn sorted_validation() {
        assert!(Extents::from_sorted_runs(vec![(0, 1), (1, 1)]).is_none());
        assert!(Extents::from_sorted_runs(vec![(5, 1), (1, 1)]).is_none());
        assert!(Extents::from_sorted_runs(vec![(u64::MAX, 2)]).is_none());
        assert!(Extents::from_sorted_runs(vec![(0, 1), (2, 1)]).is_some());
    }
}
