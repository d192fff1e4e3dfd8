//! The configuration reference (`docs/configuration.md`) shows the example configuration
//! verbatim, so the two cannot drift apart.

#[test]
fn configuration_reference_embeds_the_example_config_verbatim() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let page =
        std::fs::read_to_string(root.join("docs/configuration.md")).expect("docs/configuration.md");
    let example = std::fs::read_to_string(root.join("adapter-tokio/activity-broker.example.toml"))
        .expect("the example configuration");
    let block = format!("```toml\n{}\n```", example.trim_end_matches('\n'));
    assert!(
        page.contains(&block),
        "docs/configuration.md must show adapter-tokio/activity-broker.example.toml verbatim in a toml block"
    );
}
