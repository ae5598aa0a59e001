//! Keeps plugins/README.md honest: its example plugin is this crate's `src/lib.rs`,
//! verbatim, so the example a reader copies is one that builds and passes its tests.

#[test]
fn readme_shows_this_crate_verbatim() {
    let readme = include_str!("../../../README.md");
    let lib = include_str!("../src/lib.rs");
    assert!(
        readme.contains(&format!("```rust\n{lib}```\n")),
        "plugins/README.md no longer contains examples/hello/src/lib.rs verbatim; \
         paste the file into the README's example again"
    );
}
