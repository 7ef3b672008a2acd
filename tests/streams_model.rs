//! Property: whatever the workload (up to 30 streams in a few categories plus
//! streams without a category, batches of 1 to 8 events of 4 types, small
//! segments so that most events live in sealed, indexed segments, reopens at
//! random points), every read the indexes serve equals a simple in-memory
//! model: `read_all` forward and backward, one stream forward and backward
//! from any version with any limit, a category, an event type, and
//! `stream_version`, through the writer's views and through a `Reader`. The
//! expected-version rules hold against the model, also right after a reopen,
//! when the stream state comes from the stream table and the indexes.

mod model;

use annal::Options;
use model::{Expect, Step, Workload, run_workload, stream_names, workload};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 32,
        failure_persistence: None,
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    #[test]
    fn reads_and_expected_versions_match_the_model(w in workload(140)) {
        run_workload(&w, &|size| Options::default().segment_size(size), "model");
    }
}

/// A fixed workload large enough to roll many segments, with reopens in the
/// middle, so that the property above always covers the long-chain case.
#[test]
fn long_chains_across_many_segments() {
    let names = stream_names(12, 3);
    let mut steps = Vec::new();
    for i in 0..400usize {
        let stream = if i % 3 == 0 { 0 } else { (i * 7) % names.len() };
        let events = (0..1 + i % 5).map(|j| ((i + j) % 4, (i * 13 + j * 31) % 90)).collect();
        let expect = if i % 2 == 0 { Expect::Right } else { Expect::Any };
        steps.push(Step::Append { stream, events, expect });
        if i % 97 == 96 {
            steps.push(Step::Reopen);
        }
        if i % 150 == 149 {
            steps.push(Step::Check);
        }
    }
    let w = Workload {
        names,
        types: model::TYPES.iter().map(|t| t.to_string()).collect(),
        segment_size: 2048,
        steps,
        seed: 7,
    };
    let n = run_workload(&w, &|size| Options::default().segment_size(size), "long chains");
    println!("long chains: {n} events");
}
