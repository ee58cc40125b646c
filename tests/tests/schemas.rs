//! The Keycloak realm and the Grafana dashboards against the vendors' own published
//! TypeScript types, at the versions of the images in docker-compose.yml
//! (`tests/schemas/check.mjs`; `scripts/test-deps.sh` installs the pinned packages).
//! A file that only parses is not a file the component accepts: Keycloak aborts the
//! realm import on one unknown key.

use std::path::Path;
use std::process::Command;

use stack_checks::{json, repo_file};

/// Runs the checker; returns (success, output).
fn check(kind: &str, files: &[&Path]) -> (bool, String) {
    let script = repo_file("tests/schemas/check.mjs");
    assert!(
        repo_file("tests/schemas/node_modules/typescript").exists(),
        "the vendor schemas are not installed: run scripts/test-deps.sh (npm ci in tests/schemas)"
    );
    let out = Command::new("node")
        .arg(script)
        .arg(kind)
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("node (Node.js 20 is needed for the schema checks): {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_ne!(out.status.code(), Some(2), "the checker could not run:\n{text}");
    (out.status.success(), text)
}

fn dashboards() -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(repo_file("grafana/dashboards"))
        .expect("grafana/dashboards")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    files
}

#[test]
fn the_realm_has_only_fields_of_keycloak_26_4_types() {
    let (ok, text) = check("keycloak", &[&repo_file("keycloak/chat-realm.json")]);
    assert!(ok, "{text}");
}

#[test]
fn every_dashboard_matches_grafana_13_2_types() {
    let files = dashboards();
    let paths: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    let (ok, text) = check("dashboard", &paths);
    assert!(ok, "{text}");
}

/// The checker finds what broke the first run: a comment key in the realm (Keycloak's
/// Jackson reader refuses it) and an unknown field anywhere in a dashboard.
#[test]
fn the_checker_names_unknown_keys_and_their_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut realm = json("keycloak/chat-realm.json");
    realm["_comment"] = "a note".into();
    realm["clients"][0]["protocolMappers"][0]["consentRequired"] = false.into();
    let realm_file = dir.path().join("realm.json");
    std::fs::write(&realm_file, realm.to_string()).expect("write");
    let (ok, text) = check("keycloak", &[&realm_file]);
    assert!(!ok, "{text}");
    assert!(text.contains("$._comment: unknown key"), "{text}");
    assert!(text.contains("$.clients[0].protocolMappers[0].consentRequired: unknown key"), "{text}");

    let mut dashboard = json("grafana/dashboards/messaging.json");
    dashboard["panels"][0]["titel"] = "typo".into();
    dashboard["panels"][1]["type"] = "timeseriez".into();
    dashboard["panels"][2]["targets"][0]["exprr"] = "up".into();
    dashboard["panels"][3]["options"]["legend"]["displayMode"] = "sideways".into();
    let dashboard_file = dir.path().join("dashboard.json");
    std::fs::write(&dashboard_file, dashboard.to_string()).expect("write");
    let (ok, text) = check("dashboard", &[&dashboard_file]);
    assert!(!ok, "{text}");
    for finding in [
        "$.panels[0].titel: unknown key",
        "$.panels[1].type: \"timeseriez\" is not a Grafana 13.2 panel plugin id",
        "$.panels[2].targets[0].exprr: unknown key",
        "$.panels[3].options.legend.displayMode: \"sideways\" is not one of",
    ] {
        assert!(text.contains(finding), "missing {finding:?} in:\n{text}");
    }
}

/// The vendor packages are pinned to the image versions of docker-compose.yml.
#[test]
fn the_schema_packages_match_the_image_versions() {
    let compose = std::fs::read_to_string(repo_file("docker-compose.yml")).expect("compose");
    let package = json("tests/schemas/package.json");
    let lock = json("tests/schemas/package-lock.json");
    for (package_name, image) in
        [("@keycloak/keycloak-admin-client", "quay.io/keycloak/keycloak:"), ("@grafana/schema", "grafana/grafana:")]
    {
        let pinned = package["devDependencies"][package_name].as_str().expect("pinned in package.json");
        assert!(compose.contains(&format!("image: {image}{pinned}\n")), "{package_name} {pinned} vs compose {image}");
        let locked = &lock["packages"][format!("node_modules/{package_name}")]["version"];
        assert_eq!(locked.as_str(), Some(pinned), "package-lock.json");
    }
}
