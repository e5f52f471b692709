//! Majority arithmetic, kept pure so that it can be checked by a table.

/// Votes a strict majority of `voters` needs.
pub(crate) fn majority(voters: usize) -> usize {
    voters / 2 + 1
}

/// The largest value that a majority of `values` (one per voter) is at or above: the commit
/// index from match indexes, or the acknowledged heartbeat round. `None` when there are no voters.
pub(crate) fn quorum_value<T: Ord + Copy>(values: &mut [T]) -> Option<T> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable_by(|a, b| b.cmp(a));
    Some(values[majority(values.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_table() {
        let table = [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)];
        for (voters, needed) in table {
            assert_eq!(majority(voters), needed, "{voters} voters");
        }
    }

    #[test]
    fn quorum_value_table() {
        let table: [(&[u64], Option<u64>); 7] = [
            (&[], None),
            (&[5], Some(5)),
            (&[5, 3], Some(3)),
            (&[5, 3, 1], Some(3)),
            (&[1, 3, 5, 7], Some(3)),
            (&[9, 9, 1, 1, 1], Some(1)),
            (&[9, 9, 9, 1, 1], Some(9)),
        ];
        for (values, expected) in table {
            let mut values = values.to_vec();
            assert_eq!(quorum_value(&mut values), expected, "{values:?}");
        }
    }
}
