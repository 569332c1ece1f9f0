//! Specification of the crate layering (ARCHITECTURE.md, "Crate dependency
//! graph"): which workspace crates each library crate may depend on. Read
//! from the crates' own manifests, `[dependencies]` and target-specific
//! dependencies alike; dev-dependencies are free (tests may use anything).

use std::collections::BTreeSet;
use std::path::Path;

/// Each library crate's folder and the workspace crates its library may use.
const ALLOWED: [(&str, &[&str]); 8] = [
    ("ir", &[]),
    ("cost", &["wafer-ir"]),
    ("workloads", &["wafer-ir"]),
    // The compiler's search prices regions with the cost crate; it never runs an engine.
    ("compiler", &["wafer-ir", "wafer-cost"]),
    ("simulator", &["wafer-ir", "wafer-cost"]),
    ("gpu", &["wafer-ir", "wafer-workloads"]),
    ("kernels", &["wafer-ir", "wafer-cost", "wafer-simulator"]),
    ("reports", &["wafer-ir", "wafer-cost", "wafer-compiler", "wafer-simulator", "wafer-gpu"]),
];

fn manifest(path: &Path) -> toml::Table {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.parse().unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `wafer-*` crates a manifest's library (not its tests) depends on.
fn wafer_dependencies(m: &toml::Table) -> BTreeSet<String> {
    let mut tables: Vec<&toml::Table> = m.get("dependencies").and_then(|d| d.as_table()).into_iter().collect();
    if let Some(targets) = m.get("target").and_then(|t| t.as_table()) {
        tables.extend(targets.values().filter_map(|t| t.get("dependencies")?.as_table()));
    }
    tables.into_iter().flat_map(|t| t.keys()).filter(|k| k.starts_with("wafer-")).cloned().collect()
}

#[test]
fn every_library_crate_depends_only_on_the_crates_below_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (dir, allowed) in ALLOWED {
        let deps = wafer_dependencies(&manifest(&root.join(dir).join("Cargo.toml")));
        let extra: Vec<_> = deps.iter().filter(|d| !allowed.contains(&d.as_str())).collect();
        assert!(extra.is_empty(), "{dir}/Cargo.toml depends on {extra:?}, outside its layer {allowed:?}");
    }
}

#[test]
fn the_compiler_does_not_depend_on_the_simulator() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let deps = wafer_dependencies(&manifest(&root.join("compiler/Cargo.toml")));
    assert!(deps.contains("wafer-cost"), "the compiler prices regions with wafer-cost: {deps:?}");
    assert!(!deps.contains("wafer-simulator"), "compile() must run no engine: {deps:?}");
}

#[test]
fn every_workspace_member_has_a_layer() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ws = manifest(&root.join("Cargo.toml"));
    let members: BTreeSet<&str> =
        ws["workspace"]["members"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    let listed: BTreeSet<&str> = ALLOWED.iter().map(|(d, _)| *d).collect();
    assert_eq!(members, listed, "add a new crate to ALLOWED (and to ARCHITECTURE.md's graph)");
}
