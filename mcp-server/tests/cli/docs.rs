//! The guides' examples are real: every `json scenario` block in `Docs/` validates.

use std::path::Path;

use super::{decision_gate, stdout};

/// The `json scenario` code blocks of a Markdown file.
fn scenario_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```json scenario") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), text) => {
                block.push_str(text);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn every_scenario_in_the_authoring_guide_validates() {
    let guide = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Docs/scenario-authoring.md");
    let blocks = scenario_blocks(&std::fs::read_to_string(guide).unwrap());
    assert!(blocks.len() >= 3, "the guide has its examples");
    let dir = tempfile::tempdir().unwrap();
    for (i, block) in blocks.iter().enumerate() {
        let file = dir.path().join(format!("example-{i}.json"));
        std::fs::write(&file, block).unwrap();
        let output = decision_gate(&["scenario", "validate", file.to_str().unwrap()]);
        assert!(
            output.status.success(),
            "example {i} of the guide: {}",
            stdout(&output)
        );
    }
}
