//! core's PyRandom against CPython's own `random` (vectors written by scripts/pyrandom-vectors.py):
//! seeding, random(), getrandbits, gauss with its cache, shuffles of several lengths, and the calls
//! interleaved as LLMPerf makes them.

use serde_json::Value;
use tokenperf_core::pyrandom::PyRandom;

fn close(a: f64, b: f64) -> bool {
    // CPython and Rust call the same libm for cos, sin, log and sqrt; allow the last bit anyway.
    (a - b).abs() <= 1e-12 * b.abs().max(1.0)
}

#[test]
fn every_method_matches_cpython() {
    let doc: Value =
        serde_json::from_str(include_str!("data/pyrandom-vectors.json")).expect("vectors");
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for case in cases {
        let seed: u128 = case["seed"].as_str().unwrap().parse().unwrap();
        let mut r = PyRandom::new(seed);
        for want in case["random_times_2_53"].as_array().unwrap() {
            let got = r.random() * 9_007_199_254_740_992.0;
            assert_eq!(got as u64, want.as_u64().unwrap(), "seed {seed} random()");
            assert_eq!(got.fract(), 0.0);
        }
        for kv in case["getrandbits"].as_array().unwrap() {
            let (k, want) = (kv[0].as_u64().unwrap() as u32, kv[1].as_u64().unwrap());
            assert_eq!(
                u64::from(r.getrandbits(k)),
                want,
                "seed {seed} getrandbits({k})"
            );
        }
        for want in case["gauss"].as_array().unwrap() {
            let (got, want) = (r.gauss(0.0, 1.0), want.as_f64().unwrap());
            assert!(close(got, want), "seed {seed} gauss: {got} vs {want}");
        }
        for want in case["gauss_scaled"].as_array().unwrap() {
            let (got, want) = (r.gauss(150.0, 80.0), want.as_f64().unwrap());
            assert!(
                close(got, want),
                "seed {seed} gauss(150, 80): {got} vs {want}"
            );
        }
        for want in case["shuffles"].as_array().unwrap() {
            let want: Vec<u64> = want
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            let mut xs: Vec<u64> = (0..want.len() as u64).collect();
            r.shuffle(&mut xs);
            assert_eq!(xs, want, "seed {seed} shuffle of {}", want.len());
        }
        for step in case["interleaved"].as_array().unwrap() {
            let a = r.gauss(150.0, 80.0);
            let b = r.gauss(550.0, 150.0);
            let mut xs: Vec<u64> = (0..84).collect();
            r.shuffle(&mut xs);
            assert!(close(a, step[0].as_f64().unwrap()) && close(b, step[1].as_f64().unwrap()));
            let head: Vec<u64> = step[2]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            assert_eq!(&xs[..5], &head[..], "seed {seed} interleaved");
        }
    }
}
