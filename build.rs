//! Embeds the schema scripts (`schema.sql`, `migrations/`, `history.sql`) without their
//! `--` comments: they document the schema for its readers, and in the binary they were
//! 14 KB of a router's flash.

use std::path::Path;

fn main() {
    let out = std::env::var("OUT_DIR").expect("OUT_DIR");
    let dir = Path::new(&out).join("sql");
    std::fs::create_dir_all(dir.join("migrations")).expect("OUT_DIR/sql");
    println!("cargo:rerun-if-changed=schema.sql");
    println!("cargo:rerun-if-changed=history.sql");
    println!("cargo:rerun-if-changed=migrations");
    let mut scripts = vec!["schema.sql".to_owned(), "history.sql".to_owned()];
    for entry in std::fs::read_dir("migrations").expect("migrations/") {
        let name = entry.expect("migrations/ entry").file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".sql") {
            scripts.push(format!("migrations/{name}"));
        }
    }
    for script in scripts {
        let text = std::fs::read_to_string(&script).expect("a schema script");
        std::fs::write(dir.join(&script), strip_comments(&text)).expect("write the script");
    }
}

/// `text` without `--` comments (outside single-quoted strings) and blank lines.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut quoted = false;
        let mut end = line.len();
        let bytes = line.as_bytes();
        for i in 0..bytes.len() {
            match bytes[i] {
                b'\'' => quoted = !quoted,
                b'-' if !quoted && bytes.get(i + 1) == Some(&b'-') => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let kept = line[..end].trim_end();
        if !kept.trim().is_empty() {
            out.push_str(kept);
            out.push('\n');
        }
    }
    out
}
