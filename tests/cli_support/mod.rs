//! Running the `annal` binary from the CLI suites: one definition of the
//! helpers `tests/cli.rs` and `tests/cli_issue13.rs` share.
#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// The `annal` binary this test run built.
pub fn annal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_annal"))
}

/// Run `annal ARGS` to completion.
pub fn run(args: &[&str]) -> Output {
    annal().args(args).output().expect("run annal")
}

/// Run `annal ARGS` with `stdin` as its standard input.
pub fn run_stdin(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = annal()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn annal");
    let mut input = child.stdin.take().expect("stdin");
    // The command may stop reading early (a refused line): ignore EPIPE.
    let _ = input.write_all(stdin);
    drop(input);
    child.wait_with_output().expect("wait annal")
}

/// Bytes of an output as text, for assertions and messages.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `out`, after asserting that the command succeeded (its outputs shown if
/// not).
pub fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// A temporary path as the `&str` an argument list takes.
pub fn p(path: &std::path::Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

/// Assert that README holds, as a ```rust block byte for byte, the code of
/// `source` (a test file's text) between its `// README: begin` and
/// `// README: end` lines: the library example of README's section
/// `section` is the one the test compiles and runs.
pub fn assert_readme_example(source: &str, section: &str) {
    let begin = source.find("// README: begin\n").expect("begin marker") + "// README: begin\n".len();
    let end = source.find("// README: end\n").expect("end marker");
    let code = &source[begin..end];
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README");
    let block = format!("```rust\n{code}```\n");
    assert!(
        readme.contains(&block),
        "README's library example of \"{section}\" must be, byte for byte, the code between the README markers \
         of its test:\n{block}"
    );
}
