//! deploy/k8s/loadgen-job.yaml against Kubernetes' own API types (k8s-openapi): every document
//! must deserialize into its kind's type and serialize back to the same document, so a misspelt
//! field, a wrong type or a field the API does not have fails here rather than at `kubectl apply`.
//! Then what the guide promises: an Indexed Job with N = completions = parallelism = --shards,
//! results on a mounted volume, and loadgen flags that loadgen itself accepts.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use serde::Deserialize;
use serde_json::Value;

const MANIFEST: &str = include_str!("../../deploy/k8s/loadgen-job.yaml");

/// Deserializes `doc` as `T` and checks that nothing was lost or changed on the way.
fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value) -> T {
    let t: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{e}: {doc:#}"));
    let back = serde_json::to_value(&t).unwrap();
    assert_eq!(&back, doc, "the manifest has fields the API type does not");
    t
}

fn documents() -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(MANIFEST)
        .map(|d| Value::deserialize(d).expect("valid YAML"))
        .collect()
}

#[test]
fn the_manifest_is_valid_kubernetes_and_runs_one_shard_per_index() {
    let docs = documents();
    let mut job = None;
    let mut claims = Vec::new();
    let mut pods = Vec::new();
    for doc in &docs {
        match (doc["apiVersion"].as_str(), doc["kind"].as_str()) {
            (Some("batch/v1"), Some("Job")) => job = Some(typed::<Job>(doc)),
            (Some("v1"), Some("PersistentVolumeClaim")) => {
                claims.push(typed::<PersistentVolumeClaim>(doc))
            }
            (Some("v1"), Some("Pod")) => pods.push(typed::<Pod>(doc)),
            other => panic!("unexpected document {other:?}"),
        }
    }
    let job = job.expect("a Job");
    let spec = job.spec.expect("a Job spec");
    assert_eq!(spec.completion_mode.as_deref(), Some("Indexed"));
    let n = spec.completions.expect("completions");
    assert_eq!(
        spec.parallelism,
        Some(n),
        "parallelism = completions: every shard at once"
    );
    let pod = spec.template.spec.expect("a pod spec");
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    let [c] = pod.containers.as_slice() else {
        panic!("one container")
    };
    assert!(c.image.as_deref().is_some_and(|i| !i.is_empty()));
    let env = c.env.clone().unwrap_or_default();
    let var = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
            .unwrap_or_else(|| panic!("env {name}"))
    };
    assert!(var("OPENAI_API_BASE").starts_with("http"));

    // The arguments, with $(VAR) expanded as the kubelet does, are flags loadgen accepts.
    let args: Vec<String> = c
        .args
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(
            |a| match a.strip_prefix("$(").and_then(|a| a.strip_suffix(')')) {
                Some(name) => var(name).replace("START_AT_VALUE", "2030-01-01T00:00:00Z"),
                None => a,
            },
        )
        .collect();
    let flags: Vec<&str> = args.iter().map(String::as_str).collect();
    let parsed = loadgen::Args::from_flags(&flags).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(parsed.shards, Some(n as u64), "--shards = completions");
    assert!(parsed.start_at.is_some());
    assert!(
        parsed.num_concurrent_requests >= n as u64,
        "every shard needs a stream"
    );

    // Results land on a mounted volume backed by the claim in this manifest.
    let at = |flag: &str| flags.iter().position(|f| *f == flag).map(|i| flags[i + 1]);
    let results = at("--results-dir").expect("--results-dir");
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| results.starts_with(&m.mount_path))
        .expect("--results-dir on a mounted volume");
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .expect("the mount's volume");
    let claim = volume
        .persistent_volume_claim
        .as_ref()
        .expect("a persistent volume");
    assert!(
        claims
            .iter()
            .any(|p| p.metadata.name.as_deref() == Some(claim.claim_name.as_str())),
        "the claim is defined beside the Job"
    );

    // The README copies the results out through the reader pod, which mounts the same claim.
    let reader = pods
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("tokenperf-results"))
        .expect("the reader pod the README names");
    let reader_spec = reader.spec.as_ref().unwrap();
    assert!(reader_spec.volumes.iter().flatten().any(|v| {
        v.persistent_volume_claim
            .as_ref()
            .is_some_and(|c| c.claim_name == claim.claim_name)
    }));
    assert!(
        reader_spec.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path == "/results")
    );
    let readme = include_str!("../../README.md");
    assert!(readme.contains("kubectl cp tokenperf-results:/results"));
}

#[test]
fn a_misspelt_field_is_caught() {
    let mut doc = documents()
        .into_iter()
        .find(|d| d["kind"] == "Job")
        .unwrap();
    doc["spec"]["completionsMode"] = Value::String("Indexed".into());
    let result = std::panic::catch_unwind(|| typed::<Job>(&doc));
    assert!(result.is_err(), "an unknown field must fail the check");
    doc["spec"]
        .as_object_mut()
        .unwrap()
        .remove("completionsMode");
    doc["spec"]["parallelism"] = Value::String("four".into());
    assert!(serde_json::from_value::<Job>(doc).is_err());
}
