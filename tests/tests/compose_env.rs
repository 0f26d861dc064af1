//! `.env.example` lists exactly the variables docker-compose.yml reads, so that
//! `cp .env.example .env` leaves none out and lists none that does nothing, and the
//! ones compose requires (`${VAR:?…}`) say so. Offline: no Docker engine needed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn read(file: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(file)).unwrap()
}

/// The variables a compose file interpolates (`${NAME…}` or `$NAME`; `$$` is a literal
/// dollar), each with whether compose refuses to start without it (`${NAME:?…}`,
/// `${NAME?…}`). YAML comments are not interpolated.
fn compose_variables(text: &str) -> BTreeMap<String, bool> {
    let mut variables = BTreeMap::new();
    for line in text.lines().filter(|line| !line.trim_start().starts_with('#')) {
        let mut rest = line;
        while let Some(at) = rest.find('$') {
            rest = &rest[at + 1..];
            if let Some(after) = rest.strip_prefix('$') {
                rest = after;
                continue;
            }
            let braced = rest.starts_with('{');
            let name_start = usize::from(braced);
            let name_len = rest[name_start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len() - name_start);
            if name_len == 0 {
                continue;
            }
            let name = &rest[name_start..name_start + name_len];
            let modifier = &rest[name_start + name_len..];
            let required = braced && (modifier.starts_with(":?") || modifier.starts_with('?'));
            *variables.entry(name.to_owned()).or_insert(false) |= required;
            rest = &rest[name_start + name_len..];
        }
    }
    variables
}

/// `NAME=value` lines of an env file, each with the comment block right above it.
fn env_file_variables(text: &str) -> BTreeMap<String, String> {
    let mut variables = BTreeMap::new();
    let mut comment = String::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(text) = line.strip_prefix('#') {
            comment.push_str(text);
            comment.push('\n');
        } else if let Some((name, _)) = line.split_once('=') {
            variables.insert(name.trim().to_owned(), std::mem::take(&mut comment));
        } else {
            comment.clear();
        }
    }
    variables
}

#[test]
fn the_scanners_find_what_compose_and_env_files_hold() {
    let compose = "x:\n  a: ${A:?set A}\n  b: \"$B\"\n  c: $${NOT_ONE}\n  # ${COMMENTED}\n  d: p-${D:-x}-${E-y}\n  f: ${F?}\n";
    let found = compose_variables(compose);
    let expected: BTreeMap<String, bool> =
        [("A", true), ("B", false), ("D", false), ("E", false), ("F", true)]
            .into_iter()
            .map(|(name, required)| (name.to_owned(), required))
            .collect();
    assert_eq!(found, expected);
    let env = env_file_variables("# about A\n# REQUIRED\nA=\n\nB=x\n# C=1 is only an example\n");
    assert_eq!(env.keys().collect::<Vec<_>>(), ["A", "B"]);
    assert_eq!(env["A"], " about A\n REQUIRED\n");
    assert_eq!(env["B"], "");
}

#[test]
fn env_example_lists_every_variable_docker_compose_reads() {
    let compose = compose_variables(&read("docker-compose.yml"));
    assert!(compose.get("MARQUEE_JWT_SECRET") == Some(&true), "compose requires the JWT secret: {compose:?}");
    let example = env_file_variables(&read(".env.example"));
    let read_by_compose: BTreeSet<&String> = compose.keys().collect();
    let listed: BTreeSet<&String> = example.keys().collect();
    let missing: Vec<&&String> = read_by_compose.difference(&listed).collect();
    assert!(missing.is_empty(), "docker-compose.yml reads {missing:?}, which .env.example does not list");
    let unused: Vec<&&String> = listed.difference(&read_by_compose).collect();
    assert!(unused.is_empty(), ".env.example lists {unused:?}, which docker-compose.yml never reads");
    for (name, required) in &compose {
        let comment = &example[name];
        assert!(!comment.trim().is_empty(), "{name} has no comment in .env.example");
        if *required {
            assert!(comment.contains("REQUIRED"), "compose requires {name}; .env.example must say so");
        }
    }
}
