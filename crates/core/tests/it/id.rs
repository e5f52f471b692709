//! Node ids: equality, order and hashing agree with the strings they hold.

use std::cmp::Ordering;

use concord_core::id::NodeId;
use proptest::prelude::*;

fn id_text() -> impl Strategy<Value = String> {
    // Short ids (compared in place) and long ones (compared with the library), sharing prefixes
    // often so that every branch of the comparison is taken.
    prop_oneof!["[ab]{1,4}", "n[0-9]{1,2}", "agent-[0-9]{1,3}", "[a-c]{14,20}",]
}

proptest! {
    #[test]
    fn order_and_equality_are_those_of_the_text(left in id_text(), right in id_text()) {
        let (left_id, right_id) = (NodeId::new(left.as_str()), NodeId::new(right.as_str()));
        prop_assert_eq!(left_id.cmp(&right_id), left.cmp(&right));
        prop_assert_eq!(left_id == right_id, left == right);
        prop_assert_eq!(left_id.clone().cmp(&left_id), Ordering::Equal);
    }
}
