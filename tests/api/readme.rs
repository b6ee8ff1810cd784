//! The README stays true to the tree.

/// Every module at the top of `src/` is named in the README's Layout section.
#[test]
fn the_layout_section_names_every_top_level_module() {
    let readme = include_str!("../../README.md");
    let layout = readme
        .split("## Layout")
        .nth(1)
        .expect("a Layout section")
        .split("\n## ")
        .next()
        .unwrap_or_default();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let named = if entry.path().is_dir() {
            layout.contains(&format!("src/{name}/"))
        } else {
            name.ends_with(".rs") && layout.contains(&name)
        };
        if !named && (entry.path().is_dir() || name.ends_with(".rs")) {
            missing.push(name);
        }
    }
    missing.sort();
    assert!(missing.is_empty(), "README Layout lacks {missing:?}");
}
