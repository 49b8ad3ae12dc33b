//! The workspace's `rust-version` is the true minimum: the highest `rust-version` of any package
//! a build of the workspace compiles, read from the locked dependency tree. A dependency bump
//! that raises it fails here, naming the dependency, instead of reaching a user as an error
//! about someone else's crate.

#![allow(clippy::unwrap_used)]

use std::process::Command;

/// `1.94.1` → (1, 94, 1); `1.88` → (1, 88, 0).
fn parse(version: &str) -> (u64, u64, u64) {
    let mut parts = version.split('.').map(|p| p.parse::<u64>().unwrap());
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

#[test]
fn the_workspace_states_the_highest_rust_version_of_its_dependency_tree() {
    let host = String::from_utf8(
        Command::new(env!("CARGO"))
            .args(["-vV"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let host = host
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .unwrap()
        .to_owned();
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--offline",
            "--filter-platform",
            &host,
        ])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let members: Vec<&str> = metadata["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    let packages = metadata["packages"].as_array().unwrap();
    let (needed, by) = packages
        .iter()
        .filter(|p| !members.contains(&p["id"].as_str().unwrap()))
        .filter_map(|p| {
            let version = p["rust_version"].as_str()?;
            Some((
                parse(version),
                format!("{} {} (rust-version {version})", p["name"], p["version"]),
            ))
        })
        .max_by_key(|(version, _)| *version)
        .unwrap();
    for member in packages
        .iter()
        .filter(|p| members.contains(&p["id"].as_str().unwrap()))
    {
        let stated = member["rust_version"].as_str().unwrap_or("none");
        assert_eq!(
            parse(stated),
            needed,
            "{} states rust-version {stated}, but {by} needs that: set [workspace.package] rust-version to it",
            member["name"]
        );
    }
}
