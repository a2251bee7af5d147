//! Coalescing of announced byte ranges into few ranged requests.

use std::ops::Range;

/// Announced ranges of one object closer than this are fetched by one request: reading the
/// bytes between them costs less than another round trip at S3 latency and bandwidth.
pub(crate) const COALESCE_GAP: u64 = 256 << 10;

/// A coalesced request spans at most this many bytes (a single larger range is fetched alone),
/// so the ranges of a large shard still spread over several concurrent requests.
pub(crate) const COALESCE_MAX: u64 = 8 << 20;

/// Group byte ranges of one object into requests: sorted by start, a range joins the current
/// group when the gap to it is below [`COALESCE_GAP`] and the group's span stays within
/// [`COALESCE_MAX`]. Empty ranges are left out; each group is in ascending order.
pub(crate) fn coalesce(ranges: &[Range<u64>]) -> Vec<Vec<Range<u64>>> {
    let mut sorted: Vec<Range<u64>> = ranges.iter().filter(|r| r.end > r.start).cloned().collect();
    sorted.sort_by_key(|r| (r.start, r.end));
    let mut groups: Vec<Vec<Range<u64>>> = Vec::new();
    let mut span = 0..0;
    for r in sorted {
        let joins = match groups.last() {
            Some(_) => {
                r.start < span.end + COALESCE_GAP
                    && r.end.max(span.end) - span.start <= COALESCE_MAX
            }
            None => false,
        };
        if joins {
            span.end = span.end.max(r.end);
            groups.last_mut().expect("a group").push(r);
        } else {
            span = r.clone();
            groups.push(vec![r]);
        }
    }
    groups
}
